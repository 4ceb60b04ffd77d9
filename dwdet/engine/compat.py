"""Runs of earlier dwdet versions: their configs lack the keys added since, name some keys as they
were named then, and their checkpoints lack some fields. :func:`migrate_config` renames each old
key and fills each missing one with the value that those runs behaved as, so the rest of the
engine reads every config and checkpoint the same way; :func:`rename_keys` is the renaming alone,
which :mod:`dwdet.config` applies (with a warning) to config files and overrides still using an
old name."""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ADDED_KEYS", "MOVED_SOURCES", "RENAMED_KEYS", "RENAMED_WEIGHTS", "custom_imports_of", "migrate_checkpoint",
           "migrate_config", "migrate_weights", "rename_keys"]

# key -> the behaviour of the runs saved before it existed
ADDED_KEYS: dict[str, Any] = {
    "model.type": "fcos",
    "train.optimizer": "sgd",
    "train.init_from": None,
    "train.ema": False,
    "train.ema_decay": 0.9998,
    "train.ema_tau": 2000.0,
    "train.keep_checkpoints": 0,
    "train.loss_weights": {},
    "data.vflip": 0.0,
    "data.transpose": 0.0,
    "model.objectness_power": 1.0,
}

# old key -> (the keys of its section that replace it, their values from the old value)
RENAMED_KEYS: dict[str, tuple[tuple[str, ...], Callable[[Any], dict[str, Any]]]] = {
    # SGD's momentum, and AdamW's beta1 beside a fixed beta2 of 0.999
    "train.momentum": (("train.sgd_momentum", "train.adamw_betas"),
                       lambda value: {"sgd_momentum": value, "adamw_betas": (value, 0.999)}),
}


# data.type -> the module that registers that data source now that it lives outside dwdet: what a
# config saved before custom_imports existed needs to import
MOVED_SOURCES: dict[str, str] = {"synthetic": "lab.synthetic"}


def custom_imports_of(config: Mapping[str, Any]) -> list[str]:
    """``custom_imports`` for a resolved config saved before the key existed: the module of its data
    source where that has moved out of dwdet, else none."""
    data = config.get("data")
    source = data.get("type") if isinstance(data, Mapping) else None
    return [MOVED_SOURCES[source]] if source in MOVED_SOURCES else []


# old state-dict prefix -> new: the head's third branch holds DW's objectness as much as FCOS's centerness
RENAMED_WEIGHTS: dict[str, str] = {"head.centerness.": "head.objectness."}


def rename_keys(config: Mapping[str, Any],
                on_rename: Callable[[str, tuple[str, ...]], None] | None = None) -> dict[str, Any]:
    """A copy of ``config`` (a whole config or one file's part of it) with the old keys of
    :data:`RENAMED_KEYS` replaced by their new ones; a new key the config also sets keeps its own
    value. ``on_rename(old, new_keys)`` is called for each key renamed."""
    data = copy.deepcopy(dict(config))
    for dotted, (new_keys, values_of) in RENAMED_KEYS.items():
        section, key = dotted.split(".")
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            for new_key, value in values_of(node.pop(key)).items():
                node.setdefault(new_key, value)
            if on_rename is not None:
                on_rename(dotted, new_keys)
    return data


def migrate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a resolved config (a dict, as saved) with its old keys renamed and the keys of
    :data:`ADDED_KEYS` it lacks; sections it does not have stay absent."""
    data = rename_keys(config)
    if "custom_imports" not in data:
        data["custom_imports"] = custom_imports_of(data)
    for dotted, value in ADDED_KEYS.items():
        section, key = dotted.split(".")
        if isinstance(data.get(section), dict):
            data[section].setdefault(key, value)
    return data


def migrate_weights(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict with the parameter names of :data:`RENAMED_WEIGHTS` renamed (order kept)."""
    def renamed(name: str) -> str:
        for old, new in RENAMED_WEIGHTS.items():
            if name.startswith(old):
                return new + name[len(old):]
        return name
    return {renamed(name): value for name, value in state.items()}


def migrate_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint read from disk, with its config and weights migrated (in place; also returned)."""
    if isinstance(ckpt.get("config"), dict):
        ckpt["config"] = migrate_config(ckpt["config"])
    for weights in ("model", "train_model"):  # (with EMA, "model" is the average and "train_model" the trained)
        if isinstance(ckpt.get(weights), dict):
            ckpt[weights] = migrate_weights(ckpt[weights])
    return ckpt
