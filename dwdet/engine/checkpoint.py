"""Checkpoint files: atomic writes, validated reads, and the RNG states that make a resume exact."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import zipfile
from typing import Any

import numpy as np
import torch

from dwdet.engine.compat import migrate_checkpoint

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "atomic_save", "link_or_copy",
           "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

CHECKPOINT_FORMAT = "dwdet-checkpoint"
# 2: the checkpoint also carries its categories (label order) and input normalisation. Version 1
# files still load (for resuming and with explicit class names for inference).
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, corrupt, foreign or incompatible."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the complete new one, never a
    partial file under ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` a (hard-linked where possible) copy of ``src``, atomically."""
    dst = os.fspath(dst)
    tmp = f"{dst}.{os.getpid()}.tmp"
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically write ``state`` with the format marker that :func:`load_checkpoint` requires."""
    atomic_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything else with a clear error.

    Every archive member's CRC is checked, so a truncated or corrupted file is caught here rather
    than half-loaded; the payload is unpickled with ``weights_only=True`` (no arbitrary code). The
    config of an older run gets the keys added since (:func:`dwdet.engine.compat.migrate_checkpoint`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt, or not written by torch.save "
                              f"({err}); resume from an earlier checkpoint") from err
    if bad_member is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt (bad CRC in {bad_member}); resume from an "
                              f"earlier checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a dwdet checkpoint: it cannot be loaded as plain tensors "
                              f"and containers ({err})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a dwdet checkpoint (no '{CHECKPOINT_FORMAT}' marker; "
                              f"found {keys})")
    if state.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}, this dwdet reads "
                              f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    return migrate_checkpoint(state)


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA (current device), numpy and Python RNG states, as checkpoint-safe types."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
