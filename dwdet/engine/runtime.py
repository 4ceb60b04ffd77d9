"""What a run needs of its process: seeding, the stop signals, and the record of where it ran."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dwdet.utils.dist import get_world_size

__all__ = ["STOP_SIGNALS", "StopRequest", "environment_record", "ignore_stop_signals", "save_environment",
           "seed_everything", "stop_signals_blocked"]

logger = logging.getLogger(__name__)

# SIGTERM: what `timeout`, `kill`, scancel and container stops send; SIGINT: Ctrl-C. Both reach the
# whole process group, DataLoader workers included.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed torch (all devices), numpy and Python; with ``deterministic``, also make cuDNN/cuBLAS
    and every torch op deterministic (ops without a deterministic kernel then raise)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


class StopRequest:
    """Set by SIGTERM or SIGINT; ranks agree on it inside the per-iteration loss all-reduce, so that
    every rank stops after the same iteration. A second SIGINT while stopping interrupts at once
    (``KeyboardInterrupt``), for a run that cannot reach the end of its iteration."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        logger.warning("received %s: saving a checkpoint after this iteration", self.signal_name)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it may install handlers
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """``worker_init_fn`` of the DataLoaders: a worker leaves the stop signals to the main process,
    which finishes its iteration, saves and then shuts the workers down (a worker that died of the
    group's SIGTERM would make the DataLoader raise instead). The workers are started with the
    signals blocked (:func:`stop_signals_blocked`): one sent before this ran is discarded here."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold the stop signals back while DataLoader workers are forked (they inherit the blocked
    mask until :func:`ignore_stop_signals`); a signal that arrived meanwhile is delivered at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def save_environment(path: str, total_batch: int) -> None:
    """Git revision, versions and the launch command, beside the checkpoints for reproducibility."""
    with open(path, "w") as f:
        json.dump(environment_record(total_batch), f, indent=2)


def environment_record(total_batch: int | None = None) -> dict:
    """What a result depends on besides its config: the checkout's revision (and whether it has
    changes), versions, the CPU and threads, the world size and the command."""
    revision, dirty = checkout_state()
    # the threads and the CPU too: a run's float rounding, and so its trajectory, depends on them
    return {"git_revision": revision or None, "git_dirty": dirty,
            "torch": torch.__version__, "python": sys.version.split()[0], "threads": torch.get_num_threads(),
            "cpu": _cpu_model(), "cpu_id": _cpu_id(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "world_size": get_world_size(), "total_batch": total_batch, "argv": sys.argv}


def checkout_state(cwd: str | None = None) -> tuple[str | None, bool | None]:
    """The checkout's revision and whether it differs from it, untracked files included (a new
    module changes a run as much as an edited one); None, None outside a checkout or without git."""
    revision = _git("rev-parse", "HEAD", cwd=cwd)
    changes = _git("status", "--porcelain", cwd=cwd)
    return revision or None, None if changes is None or not revision else bool(changes)


def _cpu_fields(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of ``cpuinfo`` (Linux; every core of a machine is the same
    type), empty where it cannot be read."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if not key and fields:
                    break  # the blank line that ends the first processor's block
                fields.setdefault(key, value.strip())
    except OSError:
        return {}
    return fields


def _cpu_model() -> str | None:
    """The CPU's model name (Linux); oneDNN and ATen pick their kernels, and so their rounding, by it."""
    return _cpu_fields().get("model name")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX; Linux), None where unknown. Without
    them bf16 autocast converts every operand, and a convolution costs several times its float32 one."""
    flags = _cpu_fields(cpuinfo).get("flags")
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def _cpu_id() -> str | None:
    """Vendor, family, model and stepping (Linux): what tells two CPUs apart whose model names are
    as generic as "AMD EPYC"."""
    fields = _cpu_fields()
    keys = [k for k in ("vendor_id", "cpu family", "model", "stepping") if k in fields]
    if not keys:
        return None
    return " ".join(fields[k] if k == "vendor_id" else f"{k.replace('cpu ', '')} {fields[k]}" for k in keys)


def _git(*args: str, cwd: str | None = None) -> str | None:
    """The output of a git command in this package's checkout (or ``cwd``); None outside one or
    without git."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=cwd or os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
