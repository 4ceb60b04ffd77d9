"""Where a config's images come from: ``data.type`` names a data source, a function of the config's
``data`` section and a split ("train", "val", "test") that returns the split's image folder and COCO
annotation file. "coco" (files under ``data.root``) is built in; a source defined outside dwdet
registers itself with :func:`register_data_source` when its module is imported, and a config names
that module in ``custom_imports`` (``dwdet.config.load_config`` imports it), so that dwdet never
imports the code of its sources.

    @register_data_source("shapes")
    def shapes_split(data, split):
        return make_shapes(data.root, seed=data.seed)[split]   # (image folder, annotation file)
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["DataSource", "data_source", "data_sources", "register_data_source"]

DataSource = Callable[[Mapping[str, Any], str], "tuple[str | os.PathLike, str | os.PathLike]"]
_SOURCES: dict[str, DataSource] = {}


def register_data_source(name: str) -> Callable[[DataSource], DataSource]:
    """Decorator: ``data.type = name`` reads its splits through the decorated function. A name
    already taken by another function is an error (the same function again, e.g. its module
    reloaded, replaces itself)."""
    def register(source: DataSource) -> DataSource:
        known = _SOURCES.get(name)
        if known is not None and _qualified(known) != _qualified(source):
            raise ValueError(f"data source {name!r} is already registered by {_qualified(known)}; "
                             f"{_qualified(source)} cannot take its name")
        _SOURCES[name] = source
        return source
    return register


def data_source(name: str, custom_imports: list[str] | None = None) -> DataSource:
    """The source registered as ``name``; an unknown one is an error naming the known ones and, for a
    config without ``custom_imports`` (``custom_imports`` is its list), how a source gets registered."""
    if name in _SOURCES:
        return _SOURCES[name]
    hint = ("; this config has no custom_imports: a data source is registered by a module that the config "
            "lists in custom_imports (e.g. custom_imports = [\"lab.synthetic\"] for type 'synthetic')"
            if not custom_imports else f" (after importing custom_imports {list(custom_imports)})")
    raise ValueError(f"config key data.type is {name!r}, which no data source has registered; known data "
                     f"sources: {', '.join(sorted(_SOURCES))}{hint}")


def data_sources() -> list[str]:
    """The registered names."""
    return sorted(_SOURCES)


def _qualified(source: DataSource) -> str:
    return f"{source.__module__}.{source.__qualname__}"


@register_data_source("coco")
def coco_split(data: Mapping[str, Any], split: str) -> tuple[str, str]:
    """COCO-format files: the ``{split}_images`` folder and ``{split}_ann`` file under ``data.root``."""
    return os.path.join(data["root"], data[f"{split}_images"]), os.path.join(data["root"], data[f"{split}_ann"])
