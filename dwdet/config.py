"""Python-file configs with inheritance and type-checked dotted overrides.

A config file is plain Python: every top-level name that does not start with ``_`` and is not a
module, function or class becomes a key (usually one dict per section: ``model``, ``loss``,
``data``, ``train``, ``eval``). A file may inherit with ``_base_ = "other.py"`` (or a list of
files, merged in order; paths relative to the file). Sections merge key by key; a dict holding
``"_replace_": True`` replaces the inherited dict instead of merging into it (MMEngine's
``"_delete_": True`` still does the same, with a deprecation warning).

Values from a child file or the command line are checked against the value they replace: an
``int`` key takes ints, a ``float`` key ints or floats, a ``bool`` key only ``True``/``False``,
lists and tuples are interchangeable and checked element by element (a single value for a
sequence key is a sequence of one: ``model.min_size=300`` means ``(300,)``), and a key whose value
is ``None`` takes anything. Neither a file with ``_base_`` nor a command-line override may add keys
(except inside a section that replaces its inherited one, or one that a file without bases
leaves empty, such as ``data.params``); an unknown key is an error that suggests the closest known
one. Every error names the key.

The top-level key ``custom_imports`` (a list of module names, ``[]`` by default) names modules that
:func:`load_config` imports once the config is resolved, before anything is built: code outside
dwdet that registers itself with dwdet, such as a data source for ``data.type``
(``dwdet.data.register_data_source``). A file's list adds to its bases' lists.

    cfg = load_config("configs/dw_r50_fpn_1x_coco.py", ["train.lr=0.02", "model.backbone=resnet18"])
    cfg.train.lr            # 0.02
    cfg = cfg.merge({"model": {"backbone_weights": None}})  # an edit in code: a new Config, checked alike
    save_config(cfg, "work_dirs/run/config.json")

Strings ``key.sub=value`` are what the command line gives (``--opts``); code edits a config with
:meth:`Config.merge`. A key renamed since an older dwdet (:data:`dwdet.engine.compat.RENAMED_KEYS`)
is renamed on loading, with a warning for files and overrides (saved runs are migrated silently).
"""
from __future__ import annotations

import ast
import copy
import difflib
import importlib
import json
import os
import runpy
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["Config", "ConfigError", "apply_overrides", "format_config", "import_custom_modules", "load_config",
           "save_config"]

_REPLACE_KEYS = ("_replace_", "_delete_")  # the documented marker, and MMEngine's (deprecated here)
CUSTOM_IMPORTS = "custom_imports"  # the top-level key of the modules load_config imports


def _replaces(value: Any) -> bool:
    return isinstance(value, Mapping) and any(value.get(key) for key in _REPLACE_KEYS)


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key."""


class Config(Mapping):
    """Read-only nested mapping with attribute access (``cfg.train.lr`` == ``cfg["train"]["lr"]``)."""

    def __init__(self, data: Mapping[str, Any], prefix: str = ""):
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_prefix", prefix)

    def __getitem__(self, key: str) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            raise KeyError(f"config has no key '{self._prefix}{key}'") from None
        return Config(value, f"{self._prefix}{key}.") if isinstance(value, dict) else value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(err.args[0]) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only; cfg.merge({...}) returns a changed copy")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Config({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain dicts, lists and scalars."""
        return copy.deepcopy(self._data)

    def merge(self, changes: Mapping[str, Any]) -> Config:
        """A new Config with ``changes`` (nested dicts, e.g. ``{"model": {"backbone_weights": None}}``)
        merged in key by key, checked as a child file's values are: no new keys (except in a
        section marked ``"_replace_": True``), each value of the type it replaces."""
        data = self.to_dict()
        _merge(data, _renamed(changes, "Config.merge"), self._prefix, allow_new=False, source="Config.merge")
        return Config(data, self._prefix)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Load a ``.py`` config (following ``_base_``) or a saved ``.json`` one, apply ``key.sub=value``
    overrides (values parsed as Python literals, bare words as strings), then import the modules of
    its ``custom_imports``."""
    data = _load_file(os.fspath(path), chain=())[0]
    if os.fspath(path).endswith(".json"):  # a saved run's config: it may predate keys that overrides name
        data = _compat().migrate_config(data)
    elif CUSTOM_IMPORTS not in data:
        data[CUSTOM_IMPORTS] = _compat().custom_imports_of(data)
    cfg = apply_overrides(data, overrides)
    import_custom_modules(cfg)
    return cfg


def import_custom_modules(cfg: Config | Mapping[str, Any]) -> None:
    """Import each module that ``cfg``'s ``custom_imports`` names; one that cannot be imported is a
    ConfigError naming it."""
    names = cfg.get(CUSTOM_IMPORTS) or []
    _check_custom_imports(names, "the resolved config")
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
                raise  # the module was found but lacks one of its own dependencies: its own error says which
            raise ConfigError(
                f"config key {CUSTOM_IMPORTS}: cannot import module {name!r} ({err}). Run from the repository "
                f"root that holds it, with the checkout's tools/*.py or python -m (the installed dwdet-* commands "
                f"do not look in the current folder), or put that folder on PYTHONPATH") from None


def apply_overrides(cfg: Config | Mapping[str, Any], overrides: Sequence[str]) -> Config:
    """``cfg`` (a Config or a resolved dict, e.g. a checkpoint's) with ``key.sub=value`` overrides
    applied, checked as :func:`load_config` checks them."""
    data = cfg.to_dict() if isinstance(cfg, Config) else copy.deepcopy(dict(cfg))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        if key in _compat().RENAMED_KEYS:
            section, leaf = key.split(".")
            _merge(data, _renamed({section: {leaf: _parse_literal(text.strip())}}, "the command line"), "",
                   allow_new=False, source="the command line")
        else:
            _set_dotted(data, key, text.strip())
    return Config(data)


def save_config(cfg: Config | Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config as JSON (loadable again with :func:`load_config`)."""
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    with open(path, "w") as f:
        f.write(format_config(data) + "\n")


def format_config(cfg: Config | Mapping[str, Any]) -> str:
    """The resolved config as the JSON that :func:`save_config` writes (what ``--print-config`` shows)."""
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    return json.dumps(data, indent=2, sort_keys=False)


def _load_file(path: str, chain: tuple[str, ...]) -> tuple[dict[str, Any], set[str]]:
    """(the merged config of ``path`` and its bases, the dotted names of its open sections: those
    that a file without bases left empty, such as ``data.params``, where children may add keys)."""
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"config inheritance loops: {' -> '.join(chain + (path,))}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    if path.endswith(".json"):
        with open(path) as f:
            return _compat().rename_keys(json.load(f)), set()  # a saved run's, maybe of an older dwdet
    if not path.endswith(".py"):
        raise ConfigError(f"config file must be .py or .json: {path}")
    namespace = runpy.run_path(path)
    own = _renamed({k: v for k, v in namespace.items() if not k.startswith("_") and not _is_code(v)}, path)
    _warn_delete_marker(own, path)
    imports = _check_custom_imports(own.pop(CUSTOM_IMPORTS, []), path)
    bases = namespace.get("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    if not bases:
        return {**_strip_replace(own), CUSTOM_IMPORTS: imports}, _empty_sections(own, "")
    merged: dict[str, Any] = {}
    open_sections: set[str] = set()
    inherited: list[str] = []
    for base in bases:
        data, base_open = _load_file(os.path.join(os.path.dirname(path), base), chain + (path,))
        inherited += data.pop(CUSTOM_IMPORTS, [])
        _merge(merged, data, "", allow_new=True)
        open_sections |= base_open
    # the bases' modules and then the file's own, each once
    merged[CUSTOM_IMPORTS] = list(dict.fromkeys(inherited + imports))
    # a file that inherits may only set keys its bases define: a typo is an error, as on the command line
    _merge(merged, own, "", allow_new=False, source=path, open_sections=open_sections)
    return merged, open_sections


def _check_custom_imports(value: Any, source: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) and name for name in value):
        raise ConfigError(f"config key '{CUSTOM_IMPORTS}' (in {source}) must be a list of module names such as "
                          f"[\"lab.synthetic\"], got {value!r}")
    return list(value)


def _compat() -> types.ModuleType:
    from dwdet.engine import compat  # here, not above: the engine imports this module
    return compat


def _renamed(tree: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``tree`` with the keys renamed since an older dwdet, each with a warning naming ``source``."""
    def warn(old: str, new: tuple[str, ...]) -> None:
        warnings.warn(f"config key '{old}' (in {source}) is now {' and '.join(repr(k) for k in new)}; "
                      f"the old name still works but is deprecated", FutureWarning, stacklevel=5)
    return _compat().rename_keys(tree, warn)


def _warn_delete_marker(tree: Mapping[str, Any], source: str, prefix: str = "") -> None:
    for key, value in tree.items():
        if key == "_delete_":
            warnings.warn(f"'_delete_' in {prefix.rstrip('.') or 'the top level'} (in {source}): write "
                          f"'_replace_=True', dwdet's one spelling of the same thing; '_delete_' still works but is "
                          f"deprecated", FutureWarning, stacklevel=4)
        elif isinstance(value, Mapping):
            _warn_delete_marker(value, source, f"{prefix}{key}.")


def _empty_sections(tree: Mapping[str, Any], prefix: str) -> set[str]:
    found = set()
    for key, value in tree.items():
        if isinstance(value, Mapping):
            found |= _empty_sections(value, f"{prefix}{key}.") if value else {prefix + key}
    return found


def _is_code(value: Any) -> bool:
    return isinstance(value, (types.ModuleType, types.FunctionType, type))


def _merge(dst: dict[str, Any], src: Mapping[str, Any], prefix: str, allow_new: bool,
           source: str = "", open_sections: set[str] = frozenset()) -> None:
    """Merge ``src`` into ``dst`` in place, type-checking every replaced value; new keys only with
    ``allow_new`` or inside ``open_sections``."""
    for key, value in src.items():
        if key in _REPLACE_KEYS:
            continue
        name = prefix + key
        if key not in dst:
            if not allow_new:
                where = f" (in {source})" if source else ""
                raise ConfigError(_unknown_key_message(name, dst) + where)
            dst[key] = _strip_replace(value)
        elif isinstance(dst[key], dict) and isinstance(value, Mapping) and not _replaces(value):
            _merge(dst[key], value, name + ".", allow_new or name in open_sections, source, open_sections)
        else:
            dst[key] = _coerce(name, value, dst[key], source)


def _strip_replace(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_replace(v) for k, v in value.items() if k not in _REPLACE_KEYS}
    return copy.deepcopy(value)


def _set_dotted(data: dict[str, Any], key: str, text: str) -> None:
    *parents, leaf = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        section = ".".join(parents[:depth + 1])
        if part not in node:
            raise ConfigError(_unknown_key_message(section, node))
        if not isinstance(node[part], dict):
            raise ConfigError(f"unknown config key '{key}': '{section}' is a value ({node[part]!r}), not a section")
        node = node[part]
    if leaf not in node:
        raise ConfigError(_unknown_key_message(key, node))
    value = _parse_literal(text)
    if isinstance(node[leaf], str) and not isinstance(value, (str, type(None))):
        value = text  # e.g. `data.year=2017` for a string key; None still unsets it
    if isinstance(node[leaf], dict) and isinstance(value, Mapping):
        _merge(node[leaf], value, key + ".", allow_new=not node[leaf])  # an empty section takes new keys, as in a file
    else:
        node[leaf] = _coerce(key, value, node[leaf], "the command line")


def _parse_literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(name: str, value: Any, old: Any, source: str = "") -> Any:
    """``value`` converted to the type of ``old`` it replaces, or a ConfigError naming ``name``."""
    if old is None or _replaces(value):
        return _strip_replace(value)
    where = f" (from {source})" if source else ""

    def fail() -> ConfigError:
        return ConfigError(f"config key '{name}' expects {type(old).__name__} like {old!r}, "
                           f"got {type(value).__name__} {value!r}{where}")

    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise fail()
        return value
    if isinstance(old, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if isinstance(old, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if isinstance(old, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            if not old or isinstance(value, Mapping):
                raise fail()
            value = [value]  # a scalar for a sequence key: a sequence of one, checked below
        kinds = {type(x) for x in old}
        if len(kinds) == 1:
            value = [_coerce(f"{name}[{i}]", x, old[0], source) for i, x in enumerate(value)]
        return type(old)(value)
    if isinstance(old, dict):
        if not isinstance(value, Mapping):
            raise fail()
        merged = copy.deepcopy(old)
        _merge(merged, value, name + ".", allow_new=True, source=source)
        return merged
    if isinstance(old, str) and value is None:
        return None  # a name or path that can be unset (e.g. model.backbone_weights=None)
    if not isinstance(value, type(old)):
        raise fail()
    return value


def _unknown_key_message(name: str, node: dict[str, Any]) -> str:
    leaf = name.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(node), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{name}'{hint} (known here: {', '.join(sorted(node)) or 'none'})"
