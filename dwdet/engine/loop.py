"""The training loop: :func:`train_steps` runs the iterations of one epoch on a :class:`TrainState`,
yielding after each one so that its caller decides about checkpoints; it knows nothing of files."""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dwdet.config import Config
from dwdet.engine.ema import ModelEMA
from dwdet.engine.loaders import to_device
from dwdet.engine.metrics import MetricsLog
from dwdet.engine.precision import autocast
from dwdet.engine.runtime import StopRequest
from dwdet.utils.dist import is_main_process, reduce_mean

__all__ = ["NonFiniteLossError", "Progress", "StepOptions", "TrainState", "train_one_epoch", "train_steps"]


class NonFiniteLossError(RuntimeError):
    """Raised when a loss or gradient is not finite and ``train.nonfinite == "stop"``."""


@dataclasses.dataclass
class Progress:
    """Where training stands; saved in checkpoints and restored on resume."""
    epoch: int = 0       # the epoch in progress (0-based)
    epoch_iter: int = 0  # batches of that epoch already trained
    iteration: int = 0   # optimiser iterations so far, skipped ones included


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The per-iteration settings of ``train`` (their defaults are the config's, in
    configs/_base_/schedule_1x.py)."""
    amp: str
    clip_grad_norm: float
    nonfinite: str
    log_interval: int
    loss_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"train.nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        if self.log_interval < 1:
            raise ValueError(f"train.log_interval must be at least 1 (iterations), got {self.log_interval}")
        for name, weight in self.loss_weights.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"train.loss_weights[{name!r}] must be a finite number >= 0, got {weight!r}")

    @classmethod
    def from_config(cls, train: Config) -> StepOptions:
        return cls(amp=train.amp, clip_grad_norm=train.clip_grad_norm, nonfinite=train.nonfinite,
                   log_interval=train.log_interval, loss_weights=dict(train.loss_weights))


@dataclasses.dataclass
class TrainState:
    """What the loop changes: the module it calls (DDP-wrapped under torchrun), the optimiser, the
    lr schedule, the fp16 scaler, the optional weight average, and the progress counters."""
    module: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    progress: Progress
    ema: ModelEMA | None = None


class _LogWindow:
    """Sums over the iterations since the last record; skipped steps count, but add no loss values.
    Each value is averaged over the steps that logged it (a loss with a warm-up changes its terms)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps = self.skipped = 0
        self.iter_time = self.data_time = 0.0

    def __len__(self) -> int:
        return self.steps + self.skipped

    def add(self, values: dict[str, float] | None, iter_time: float, data_time: float) -> None:
        if values is None:
            self.skipped += 1
        else:
            self.steps += 1
            for name, value in values.items():
                self.sums[name] = self.sums.get(name, 0.0) + value
                self.counts[name] = self.counts.get(name, 0) + 1
        self.iter_time += iter_time
        self.data_time += data_time

    def record(self) -> dict[str, float]:
        done = len(self)
        return {**{k: v / self.counts[k] for k, v in self.sums.items()}, "skipped": self.skipped,
                "time": self.iter_time / done, "data_time": self.data_time / done}


def train_steps(state: TrainState, batches: Any, options: StepOptions, device: torch.device, log: MetricsLog,
                stop: StopRequest, total_iters: int | None = None) -> Iterator[bool]:
    """Train on ``batches`` (the rest of epoch ``state.progress.epoch``), yielding after every
    iteration whether a stop was requested (it then ends after that iteration).

    Each iteration: forward under autocast, one all-reduce of the loss terms (for logging, the
    finiteness check and the stop request, so that all ranks stop after the same iteration),
    backward, optional clipping, step, EMA update, schedule. A non-finite loss or gradient makes the
    fp16 scaler skip the step; without a scaler it stops training (:class:`NonFiniteLossError`) or
    skips the step, per ``options.nonfinite``. A record is logged every ``log_interval`` iterations
    of the run, at the end of the epoch and at a stop, so that no iteration goes unlogged.
    """
    progress = state.progress
    state.module.train()
    params = [p for p in state.module.parameters() if p.requires_grad]
    window = _LogWindow()
    total = progress.epoch_iter + len(batches) if hasattr(batches, "__len__") else None
    tty = sys.stderr.isatty()
    # without a terminal, a line every 30 s (miniters=1: tqdm's adaptive count would wait for an
    # iteration count it estimated from the first, slow ones and show 0/N for the whole epoch)
    bar = tqdm(batches, desc=f"epoch {progress.epoch + 1}", initial=progress.epoch_iter, total=total,
               disable=not is_main_process(), dynamic_ncols=True, mininterval=0.1 if tty else 30.0,
               miniters=None if tty else 1)
    timer = time.perf_counter()
    try:
        for images, targets in bar:
            images, targets = to_device(images, targets, device)
            data_time = time.perf_counter() - timer
            values, lr, stopped = _step(state, images, targets, params, options, device, stop)
            window.add(values, time.perf_counter() - timer, data_time)
            end_of_epoch = total is not None and progress.epoch_iter == total
            if progress.iteration % options.log_interval == 0 or stopped or end_of_epoch:
                record = {"type": "train", "epoch": progress.epoch + 1, "iter": progress.iteration, "lr": lr,
                          **window.record()}
                if total_iters is not None:
                    record["eta_s"] = round(record["time"] * (total_iters - progress.iteration))
                if device.type == "cuda":
                    record["memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
                log.write(record, progress.iteration)
                bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", lr=f"{lr:.3g}")
                window = _LogWindow()
            yield stopped
            if stopped:
                return
            timer = time.perf_counter()
    finally:
        bar.close()


def _step(state: TrainState, images: list[torch.Tensor], targets: list[dict], params: list[torch.Tensor],
          options: StepOptions, device: torch.device, stop: StopRequest
          ) -> tuple[dict[str, float] | None, float, bool]:
    """One iteration; returns (the logged values, or None for a skipped step; the lr; stop agreed)."""
    progress, optimizer, scaler = state.progress, state.optimizer, state.scaler
    with autocast(device, options.amp):
        loss_dict = state.module(images, targets)
    names = sorted(loss_dict)
    if not set(options.loss_weights) <= set(names):
        raise ValueError(f"train.loss_weights names {sorted(set(options.loss_weights) - set(names))}, which the loss "
                         f"does not return; its terms are {names}")
    # the terms are logged as the loss returns them, the total as it is trained
    loss = sum(options.loss_weights.get(name, 1.0) * loss_dict[name].float() for name in names)
    reduced = reduce_mean(torch.stack([loss_dict[n].detach().float() for n in names]
                                      + [loss.detach(), torch.tensor(float(stop.requested), device=device)]))
    *term_values, loss_value, stop_votes = reduced.tolist()

    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if options.clip_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, options.clip_grad_norm).item()
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]).item()
    if math.isfinite(loss_value) and math.isfinite(grad_norm) or scaler.is_enabled():
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skips the step itself when fp16 gradients overflowed
        scaler.update()
        skipped = scaler.get_scale() < scale
    elif options.nonfinite == "skip":
        skipped = True
    else:
        terms = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, term_values))
        raise NonFiniteLossError(
            f"non-finite loss or gradient at epoch {progress.epoch + 1}, iteration {progress.iteration + 1} "
            f"(loss={loss_value:.4g}: {terms}; grad_norm={grad_norm:.4g}). Training stopped; the last good "
            f"checkpoint is untouched. Lower train.lr, set train.clip_grad_norm, or set train.nonfinite=skip.")
    if state.ema is not None and not skipped:
        state.ema.update()
    lr = optimizer.param_groups[0]["lr"]
    state.lr_scheduler.step()
    progress.epoch_iter += 1
    progress.iteration += 1
    values = None if skipped else {**dict(zip(names, term_values)), "loss": loss_value, "grad_norm": grad_norm}
    return values, lr, stop_votes > 0


def train_one_epoch(state: TrainState, batches: Any, options: StepOptions, device: torch.device, log: MetricsLog,
                    stop: StopRequest, total_iters: int | None = None) -> bool:
    """:func:`train_steps` to the end of the epoch or a stop; True if it stopped early."""
    stopped = False
    for stopped in train_steps(state, batches, options, device, log, stop, total_iters):
        pass
    return stopped
