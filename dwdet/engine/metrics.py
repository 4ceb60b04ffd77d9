"""Run metrics as JSON lines (``metrics.jsonl``), mirrored to TensorBoard when it is installed."""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

from dwdet.utils.dist import is_main_process

__all__ = ["MetricsLog"]


class MetricsLog:
    """Appends one JSON object per record on rank 0 (a no-op on the other ranks).

    Every record has a ``"type"`` ("train", "val", ...); with ``tensorboard=True`` its numbers are
    also written as scalars ``<type>/<key>`` at ``step``. Non-finite numbers are written as
    ``null`` so that the file stays valid JSON.
    """

    def __init__(self, work_dir: str | os.PathLike, tensorboard: bool = False):
        self.path = os.path.join(work_dir, "metrics.jsonl")
        self._writer = None
        if tensorboard and is_main_process():
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("train.tensorboard is set but tensorboard is not installed; "
                              "metrics go to metrics.jsonl only", stacklevel=2)
            else:
                self._writer = SummaryWriter(os.path.join(work_dir, "tensorboard"))

    def write(self, record: dict[str, Any], step: int) -> None:
        if not is_main_process():
            return
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "type":
                    self._writer.add_scalar(f"{record['type']}/{key}", value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
