"""Run metrics as JSON lines (``metrics.jsonl``), mirrored to TensorBoard (``tensorboard/``) and, one
line a record, to the ``dwdet`` logger (``train.log``)."""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from dwdet.utils.dist import is_main_process

__all__ = ["MetricsLog", "read_metrics"]

logger = logging.getLogger(__name__)


class MetricsLog:
    """Appends one JSON object per record on rank 0 (a no-op on the other ranks).

    Every record has a ``"type"`` ("train", "val", ...); with ``tensorboard=True`` its numbers are
    also written as scalars ``<type>/<key>`` at ``step`` (a dict of numbers, such as the per-class
    AP, as ``<type>/<key>/<name>``). Non-finite numbers are written as ``null`` so that the file
    stays valid JSON.
    """

    def __init__(self, work_dir: str | os.PathLike, tensorboard: bool = False):
        self.path = os.path.join(work_dir, "metrics.jsonl")
        self._writer = None
        if tensorboard and is_main_process():
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("train.tensorboard is set but tensorboard is not installed (pip install "
                               "tensorboard); metrics go to metrics.jsonl only")
            else:
                self._writer = SummaryWriter(os.path.join(work_dir, "tensorboard"))

    def write(self, record: dict[str, Any], step: int) -> None:
        if not is_main_process():
            return
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("%s", " ".join(f"{k}={_short(v)}" for k, v in record.items() if not isinstance(v, dict)))
        if self._writer is not None:
            for key, value in record.items():
                if key == "type":
                    continue
                values = value if isinstance(value, dict) else {"": value}
                for name, number in values.items():
                    if isinstance(number, (int, float)) and not isinstance(number, bool):
                        self._writer.add_scalar(f"{record['type']}/{key}" + (f"/{name}" if name else ""), number, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: str) -> dict[str, dict[int, dict]]:
    """{"train": {iteration: record}, "val": {iteration: record}} of one metrics.jsonl."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics file at {path} (expected a run folder or a metrics.jsonl)")
    records: dict[str, dict[int, dict]] = {"train": {}, "val": {}}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not a JSON line: {err}") from err
            if record.get("type") in records:
                records[record["type"]][int(record["iter"])] = record
    return records


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
