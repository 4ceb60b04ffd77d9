"""The ``dwdet`` logger: rank 0's messages and every rank's warnings and errors, on the console and
in ``train.log`` of the run folder (one file for all ranks; each line names its rank)."""
from __future__ import annotations

import logging
import os
import sys

from dwdet.utils.dist import get_rank, is_distributed

__all__ = ["setup_logging"]

_FORMAT = "%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
_TAG = "_dwdet_handler"  # marks the handlers installed here, so a second call replaces them


class _Stdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (test harnesses swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # noqa: D401
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(work_dir: str | os.PathLike | None = None, filename: str = "train.log") -> logging.Logger:
    """Configure the ``dwdet`` logger (and Python warnings) for this process and return it.

    Rank 0 logs INFO and above, the other ranks WARNING and above. With ``work_dir``, the lines also
    go to ``work_dir/filename`` (appended, so a resumed run continues the same file). Calling it
    again replaces the handlers of the previous call."""
    # before the process group is open, torchrun's RANK says which process this is
    rank = get_rank() if is_distributed() else int(os.environ.get("RANK", 0))
    level = logging.INFO if rank == 0 else logging.WARNING
    formatter = logging.Formatter(_FORMAT.format(rank=rank), datefmt="%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [_Stdout()]
    if work_dir is not None:
        os.makedirs(work_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(work_dir, filename), mode="a", delay=False))
    logging.captureWarnings(True)
    for name in ("dwdet", "py.warnings"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, _TAG, False)]:
            logger.removeHandler(handler)
            handler.close()
        for handler in handlers:
            setattr(handler, _TAG, True)
            handler.setFormatter(formatter)
            handler.setLevel(level)
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logging.getLogger("dwdet")
