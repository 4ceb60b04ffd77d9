"""Writing results that took long to compute: the folder is created, and a failed write puts the
results somewhere else and says where, instead of losing them."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

__all__ = ["output_folder", "write_bytes", "write_json"]

logger = logging.getLogger(__name__)


def write_bytes(data: bytes, path: str | os.PathLike) -> str:
    """Write ``data`` to ``path`` (creating its folder) and return the path written.

    If ``path`` cannot be written (no permission, a file where a folder should be, a full disk),
    the data goes to a new file in the system's temporary folder instead; the returned path and a
    logged error name both places."""
    path = os.fspath(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path
    except OSError as err:
        stem, suffix = os.path.splitext(os.path.basename(path))
        fd, fallback = tempfile.mkstemp(prefix=f"{stem}_", suffix=suffix)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        logger.error("could not write %s (%s); the results were written to %s instead", path, err, fallback)
        return fallback


def write_json(obj: Any, path: str | os.PathLike, indent: int | None = None) -> str:
    """Write ``obj`` as JSON to ``path`` the way :func:`write_bytes` writes (elsewhere, and said
    where, if ``path`` cannot be written); returns the path written."""
    return write_bytes((json.dumps(obj, indent=indent) + "\n").encode(), path)


def output_folder(path: str | os.PathLike) -> str:
    """``path``, created if needed; if it cannot be (a file in the way, no permission), a new folder
    in the system's temporary folder, named in a logged error. Returns the folder to write to."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        return path
    except OSError as err:
        fallback = tempfile.mkdtemp(prefix=f"{os.path.basename(os.path.abspath(path))}_")
        logger.error("could not create the folder %s (%s); the outputs go to %s instead", path, err, fallback)
        return fallback
