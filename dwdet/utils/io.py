"""Writing results that took long to compute: the folder is created, and a failed write puts the
results somewhere else and says where, instead of losing them."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

__all__ = ["write_json"]

logger = logging.getLogger(__name__)


def write_json(obj: Any, path: str | os.PathLike, indent: int | None = None) -> str:
    """Write ``obj`` as JSON to ``path`` (creating its folder) and return the path written.

    If ``path`` cannot be written (no permission, a file where a folder should be, a full disk),
    the JSON goes to a new file in the system's temporary folder instead; the returned path and a
    logged error name both places."""
    path = os.fspath(path)
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f, indent=indent)
            f.write("\n")
        return path
    except OSError as err:
        fd, fallback = tempfile.mkstemp(prefix=f"{os.path.splitext(os.path.basename(path))[0]}_", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent)
            f.write("\n")
        logger.error("could not write %s (%s); the results were written to %s instead", path, err, fallback)
        return fallback
