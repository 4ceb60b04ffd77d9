"""Runs of earlier dwdet versions: their configs lack the keys added since, and their checkpoints
some of the fields. :func:`migrate_config` fills each missing key with the value that those runs
behaved as, so the rest of the engine reads every config and checkpoint the same way."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["ADDED_KEYS", "migrate_checkpoint", "migrate_config"]

# key -> the behaviour of the runs saved before it existed
ADDED_KEYS: dict[str, Any] = {
    "model.type": "fcos",
    "train.optimizer": "sgd",
    "train.init_from": None,
    "train.ema": False,
    "train.ema_decay": 0.9998,
    "train.ema_tau": 2000.0,
    "train.keep_checkpoints": 0,
}


def migrate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a resolved config (a dict, as saved) with the keys of :data:`ADDED_KEYS` it lacks;
    sections it does not have stay absent."""
    data = copy.deepcopy(dict(config))
    for dotted, value in ADDED_KEYS.items():
        section, key = dotted.split(".")
        if isinstance(data.get(section), dict):
            data[section].setdefault(key, value)
    return data


def migrate_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint read from disk, with its config migrated (in place; also returned)."""
    if isinstance(ckpt.get("config"), dict):
        ckpt["config"] = migrate_config(ckpt["config"])
    return ckpt
