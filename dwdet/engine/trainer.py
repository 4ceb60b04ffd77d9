"""Training: :func:`train_one_epoch` (one plain loop) and :class:`Trainer` (building, resuming,
checkpointing and evaluating around it), for one process or torchrun DDP.

The config keys read here (``train`` and ``eval`` sections):

    train.epochs, train.batch_size (per process), train.lr (for a total batch of 16; scaled
    linearly), train.optimizer ("sgd" | "adamw"), train.momentum (AdamW's beta1),
    train.weight_decay, train.warmup_iters, train.warmup_ratio, train.lr_steps (epochs after which
    the lr drops), train.lr_gamma, train.clip_grad_norm (0 = off), train.ema, train.ema_decay,
    train.ema_tau (:mod:`dwdet.engine.ema`), train.amp ("none" | "bf16" |
    "fp16"), train.nonfinite ("stop" | "skip"), train.seed, train.deterministic, train.num_workers,
    train.log_interval (iterations),
    train.checkpoint_interval (epochs between kept ``epoch_N.pth``; 0 = only the last),
    train.checkpoint_iters (also save ``last.pth`` every N iterations; 0 = off), train.tensorboard,
    eval.interval (epochs; 0 = never during training), eval.batch_size, eval.num_workers.

``model.num_classes`` is taken from the training dataset's categories (an explicit value must agree).
Checkpoints carry the resolved config, the categories in label order and the input normalisation,
so that a checkpoint alone is enough for inference (:func:`dwdet.engine.builders.load_detector`).
The run folder gets ``train.log`` (:func:`dwdet.utils.logger.setup_logging`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dwdet.config import Config, save_config
from dwdet.engine import builders
from dwdet.engine.checkpoint import CheckpointError, link_or_copy, load_checkpoint, rng_state, save_checkpoint, \
    set_rng_state
from dwdet.engine.ema import ModelEMA
from dwdet.engine.evaluation import CocoEvaluator, evaluate, metrics_table
from dwdet.engine.loaders import EpochLoader, eval_loader, to_device
from dwdet.engine.metrics import MetricsLog
from dwdet.engine.optim import build_lr_scheduler, build_optimizer, scaled_lr
from dwdet.engine.precision import autocast, grad_scaler
from dwdet.utils.dist import barrier, gather_to_main, get_rank, get_world_size, init_distributed, is_distributed, \
    is_main_process, reduce_mean
from dwdet.utils.logger import setup_logging

__all__ = ["NonFiniteLossError", "Progress", "StepOptions", "StopRequest", "Trainer", "seed_everything",
           "train_one_epoch"]


logger = logging.getLogger(__name__)


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
    """The per-iteration settings of ``train``."""
    amp: str = "none"
    clip_grad_norm: float = 0.0
    nonfinite: str = "stop"
    log_interval: int = 20
    checkpoint_iters: int = 0

    def __post_init__(self) -> None:
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"train.nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")

    @classmethod
    def from_config(cls, train: Config) -> StepOptions:
        return cls(amp=train.amp, clip_grad_norm=train.clip_grad_norm, nonfinite=train.nonfinite,
                   log_interval=train.log_interval, checkpoint_iters=train.checkpoint_iters)


class StopRequest:
    """Set by SIGTERM; ranks agree on it inside the per-iteration loss all-reduce, so that every
    rank stops after the same iteration."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        logger.warning("received signal %d: saving a checkpoint after this iteration", signum)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it may install handlers
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


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


class _LogWindow:
    """Sums over the current log interval; skipped steps count, but add no loss values."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = self.skipped = 0
        self.iter_time = self.data_time = 0.0

    def add(self, values: dict[str, float] | None, iter_time: float, data_time: float) -> None:
        if values is None:
            self.skipped += 1
        else:
            self.steps += 1
            for name, value in values.items():
                self.sums[name] = self.sums.get(name, 0.0) + value
        self.iter_time += iter_time
        self.data_time += data_time

    def record(self) -> dict[str, float]:
        done = self.steps + self.skipped
        return {**{k: v / max(self.steps, 1) for k, v in self.sums.items()}, "skipped": self.skipped,
                "time": self.iter_time / done, "data_time": self.data_time / done}


def train_one_epoch(model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer,
                    lr_scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                    progress: Progress, options: StepOptions, device: torch.device, log: MetricsLog,
                    stop: StopRequest, save_checkpoint_fn: Callable[[], None] | None = None,
                    total_iters: int | None = None, ema: ModelEMA | None = None) -> bool:
    """Train on ``batches`` (the rest of epoch ``progress.epoch``), advancing ``progress``.

    Each iteration: forward under autocast, one all-reduce of the loss terms (for logging, the
    finiteness check and the stop request), backward, optional clipping, step, ``ema`` update, schedule. A
    non-finite loss or gradient makes the fp16 scaler skip the step; without a scaler it stops
    training (:class:`NonFiniteLossError`) or skips the step, per ``options.nonfinite``.

    Returns True if a stop was requested (after a complete iteration), False at the epoch's end.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    window = _LogWindow()
    bar = tqdm(batches, desc=f"epoch {progress.epoch + 1}", initial=progress.epoch_iter,
               total=progress.epoch_iter + len(batches) if hasattr(batches, "__len__") else None,
               disable=not is_main_process(), dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    stopped = False
    timer = time.perf_counter()
    for images, targets in bar:
        images, targets = to_device(images, targets, device)
        data_time = time.perf_counter() - timer

        with autocast(device, options.amp):
            loss_dict = model(images, targets)
        names = sorted(loss_dict)
        loss = sum(loss_dict[name].float() for name in names)
        reduced = reduce_mean(torch.stack([loss_dict[n].detach().float() for n in names]
                                          + [loss.detach(), torch.tensor(float(stop.requested), device=device)]))
        *term_values, loss_value, stop_votes = reduced.tolist()
        stopped = stop_votes > 0

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
        if ema is not None and not skipped:
            ema.update()
        lr = optimizer.param_groups[0]["lr"]
        lr_scheduler.step()
        progress.epoch_iter += 1
        progress.iteration += 1

        values = None if skipped else {**dict(zip(names, term_values)), "loss": loss_value, "grad_norm": grad_norm}
        window.add(values, time.perf_counter() - timer, data_time)
        if (window.steps + window.skipped) % options.log_interval == 0 or stopped:
            record = {"type": "train", "epoch": progress.epoch + 1, "iter": progress.iteration, "lr": lr,
                      **window.record()}
            if total_iters is not None:
                record["eta_s"] = round(record["time"] * (total_iters - progress.iteration))
            if device.type == "cuda":
                record["memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
            log.write(record, progress.iteration)
            bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", lr=f"{lr:.3g}")
            window = _LogWindow()
        if save_checkpoint_fn is not None and options.checkpoint_iters and \
                progress.iteration % options.checkpoint_iters == 0:
            save_checkpoint_fn()
        timer = time.perf_counter()
        if stopped:
            break
    bar.close()
    return stopped


ModelBuilder = Callable[[Config], nn.Module]
TrainDataBuilder = Callable[[Config], tuple[Any, Any]]
ValDataBuilder = Callable[[Config], tuple[Any, CocoEvaluator]]


class Trainer:
    """A training run in ``work_dir``: build everything, optionally resume, then :meth:`fit`.

    The builders default to the real detector and COCO data (:mod:`dwdet.engine.builders`).
    Call from every rank under torchrun.
    """

    def __init__(self, cfg: Config, work_dir: str | os.PathLike, resume: str | os.PathLike | None = None, *,
                 build_model: ModelBuilder | None = None, build_train_data: TrainDataBuilder | None = None,
                 build_val_data: ValDataBuilder | None = None, allow_world_size_change: bool = False):
        self.work_dir = os.fspath(work_dir)
        train = cfg.train
        self.device = init_distributed()
        rank, world_size = get_rank(), get_world_size()
        os.makedirs(self.work_dir, exist_ok=True)
        setup_logging(self.work_dir)
        self.allow_world_size_change = allow_world_size_change

        dataset, batch_sampler = (build_train_data or builders.build_train_data)(cfg)
        # label k is the k-th category of the training annotation file; None for a dataset without
        # categories (then model.num_classes must be given)
        self.categories = getattr(dataset, "categories", None)
        if self.categories is not None:
            cfg = builders.with_num_classes(cfg, self.categories, getattr(dataset, "ann_file", "the training set"))
        self.cfg = cfg

        seed_everything(train.seed, train.deterministic)  # the same initial weights on every rank
        self.model = (build_model or builders.build_model)(cfg).to(self.device)
        if train.get("init_from") and resume is None:  # (configs saved before this key lack it)
            self._init_weights(train.init_from)
        seed_everything(train.seed + rank, train.deterministic)  # then different randomness per rank
        self.ddp_model: nn.Module = self.model
        if is_distributed():
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)

        self.loader = EpochLoader(dataset, batch_sampler, train.num_workers, seed=train.seed + rank,
                                  pin_memory=self.device.type == "cuda")
        if len(self.loader) == 0:
            raise ValueError(f"the training batch sampler yields no batches on rank {rank}")
        self.total_batch = train.batch_size * world_size
        self.optimizer = build_optimizer(self.model, scaled_lr(train.lr, self.total_batch), train.momentum,
                                         train.weight_decay, train.get("optimizer", "sgd"))
        self.lr_scheduler = build_lr_scheduler(self.optimizer, len(self.loader), train.warmup_iters,
                                               train.warmup_ratio, train.lr_steps, train.lr_gamma)
        self.scaler = grad_scaler(self.device, train.amp)
        self.options = StepOptions.from_config(train)
        self.progress = Progress()
        self.ema = ModelEMA(self.model, train.ema_decay, train.ema_tau) if train.get("ema") else None

        self.val_loader = self.evaluator = None
        if cfg.eval.interval > 0:
            val_set, self.evaluator = (build_val_data or builders.build_val_data)(cfg)
            _check_same_categories(self.categories, getattr(dataset, "ann_file", None), val_set)
            self.val_loader = eval_loader(val_set, cfg.eval.batch_size, cfg.eval.num_workers)
        self.log = MetricsLog(self.work_dir, tensorboard=train.tensorboard)
        if resume is not None:
            self.resume(resume)

    def _init_weights(self, path: str) -> None:
        """Start from the model weights of another run's checkpoint (``train.init_from``); the
        optimizer, schedule and progress start afresh."""
        state = load_checkpoint(path)["model"]
        try:
            self.model.load_state_dict(state)
        except RuntimeError as err:  # missing, unexpected or differently shaped parameters
            raise ValueError(f"config key train.init_from: {path} does not fit this model: {err}") from None

    @property
    def last_checkpoint(self) -> str:
        return os.path.join(self.work_dir, "last.pth")

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, except the RNG states (see :meth:`save`). With EMA, ``model``
        holds the averaged weights (what inference loads) and ``train_model`` the trained ones."""
        weights = {"model": self.model.state_dict()}
        if self.ema is not None:
            weights = {"model": self.ema.state_dict(), "train_model": weights["model"], "ema_updates": self.ema.updates}
        return {**weights, "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "progress": dataclasses.asdict(self.progress), "world_size": get_world_size(),
                "batch_size": self.cfg.train.batch_size, "config": self.cfg.to_dict(),
                "categories": self.categories, "input": builders.input_spec(self.model)}

    def save(self, keep_as: str | None = None) -> None:
        """Write ``last.pth`` (every rank's RNG state included; call on all ranks) and optionally
        keep a copy named ``keep_as``."""
        rng = gather_to_main(rng_state())
        if is_main_process():
            save_checkpoint({**self.state_dict(), "rng": rng}, self.last_checkpoint)
            if keep_as:
                link_or_copy(self.last_checkpoint, os.path.join(self.work_dir, keep_as))
        barrier()

    def resume(self, path: str | os.PathLike) -> None:
        """Continue exactly where the checkpoint at ``path`` stopped (same world size and batch).

        With ``allow_world_size_change``, a checkpoint of another world size or per-process batch
        continues too, inexactly: at the same number of images into the epoch (rounded to whole
        batches) and the schedule's lr at the new iteration count, with this run's data sharding
        and fresh random streams."""
        ckpt = load_checkpoint(path)  # on CPU; load_state_dict copies to the parameters' device
        saved = (ckpt["world_size"], ckpt["batch_size"])
        current = (get_world_size(), self.cfg.train.batch_size)
        if saved != current and not self.allow_world_size_change:
            raise CheckpointError(
                f"{path} was written by {saved[0]} processes x batch {saved[1]}; this run has {current[0]} x "
                f"{current[1]}. An exact resume needs the same data sharding: relaunch with the same number of "
                f"processes and train.batch_size, or pass --allow-world-size-change to continue inexactly.")
        _warn_config_changes(ckpt["config"], self.cfg.to_dict())
        optimizers = (ckpt["config"].get("train", {}).get("optimizer", "sgd"), self.cfg.train.get("optimizer", "sgd"))
        if optimizers[0] != optimizers[1]:  # their states hold different buffers
            raise CheckpointError(f"{path} was trained with train.optimizer={optimizers[0]!r}; this run has "
                                  f"{optimizers[1]!r}. Resume with the checkpoint's optimizer, or start a new run "
                                  f"from its weights with train.init_from.")
        self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if self.ema is not None and "ema_updates" in ckpt:
            self.ema.load_state_dict(ckpt["model"], ckpt["ema_updates"])
        elif self.ema is not None:
            self.ema = ModelEMA(self.model, self.ema.decay, self.ema.tau)
            logger.info("%s has no weight average (trained without train.ema): the average starts from its "
                        "weights", path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if saved == current:
            self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
            self.progress = Progress(**ckpt["progress"])
            set_rng_state(ckpt["rng"][get_rank()])
        else:
            self.progress = _rescaled_progress(Progress(**ckpt["progress"]), saved[0] * saved[1],
                                               current[0] * current[1], len(self.loader))
            self._set_schedule_iteration(self.progress.iteration)
            warnings.warn(f"resuming {path} ({saved[0]} processes x batch {saved[1]}) with {current[0]} x "
                          f"{current[1]}: not an exact resume (the data order and random streams differ); "
                          f"continuing at epoch {self.progress.epoch + 1}, batch {self.progress.epoch_iter}",
                          stacklevel=2)
        logger.info("resumed from %s: epoch %d, batch %d (iteration %d)", path, self.progress.epoch + 1,
                    self.progress.epoch_iter, self.progress.iteration)

    def _set_schedule_iteration(self, iteration: int) -> None:
        """Put the lr schedule (whose base lr is this run's, scaled to its total batch) at ``iteration``."""
        scheduler = self.lr_scheduler
        scheduler.last_epoch = iteration
        lrs = [base * factor(iteration) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = lrs  # what get_last_lr() reports

    def evaluate(self) -> dict[str, float] | None:
        """COCO metrics of the current weights, or their average with EMA (rank 0; ``None``
        elsewhere or without a val set)."""
        if self.evaluator is None:
            return None
        model = self.model if self.ema is None else self.ema.module
        metrics = evaluate(model, self.val_loader, self.evaluator, self.device, self.options.amp, verbose=False)
        if metrics is not None:
            logger.info("COCO bbox metrics after epoch %d:\n%s", self.progress.epoch, metrics_table(metrics))
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``, evaluating every ``eval.interval`` epochs.

        Returns ``{"status": "finished" | "interrupted", "epoch", "iteration", "metrics"}`` (the
        last evaluation's metrics on rank 0). On SIGTERM, saves ``last.pth`` and returns
        "interrupted"; a non-finite loss with ``nonfinite="stop"`` raises and saves nothing.
        """
        train = self.cfg.train
        epochs = train.epochs
        if is_main_process():
            save_config(self.cfg, os.path.join(self.work_dir, "config.json"))
            _save_environment(os.path.join(self.work_dir, "environment.json"), self.total_batch)
        metrics = None
        try:
            with StopRequest() as stop:
                while self.progress.epoch < epochs:
                    if self._train_epoch(stop):
                        self.save()
                        return self._result("interrupted", metrics)
                    epoch = self.progress.epoch
                    keep = train.checkpoint_interval and (epoch % train.checkpoint_interval == 0 or epoch == epochs)
                    self.save(keep_as=f"epoch_{epoch}.pth" if keep else None)
                    if self.evaluator is not None and (epoch % self.cfg.eval.interval == 0 or epoch == epochs):
                        metrics = self.evaluate()
                        if metrics is not None:
                            self.log.write({"type": "val", "epoch": epoch, "iter": self.progress.iteration,
                                            **metrics}, self.progress.iteration)
        finally:
            self.log.close()
        return self._result("finished", metrics)

    def _train_epoch(self, stop: StopRequest) -> bool:
        """The rest of the current epoch; True if stopped early, else moves progress to the next epoch."""
        batches = self.loader.epoch(self.progress.epoch, start=self.progress.epoch_iter)
        set_epoch = getattr(getattr(self.model, "loss", None), "set_epoch", None)
        if set_epoch is not None:  # losses with an epoch schedule (TOOD's warm-up)
            set_epoch(self.progress.epoch)
        stopped = train_one_epoch(self.ddp_model, batches, self.optimizer, self.lr_scheduler, self.scaler,
                                  self.progress, self.options, self.device, self.log, stop,
                                  save_checkpoint_fn=self.save,
                                  total_iters=self.cfg.train.epochs * len(self.loader), ema=self.ema)
        if not stopped:
            self.progress = Progress(epoch=self.progress.epoch + 1, iteration=self.progress.iteration)
        return stopped

    def _result(self, status: str, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {"status": status, "epoch": self.progress.epoch, "iteration": self.progress.iteration,
                "metrics": metrics}


def _rescaled_progress(progress: Progress, saved_batch: int, batch: int, batches_per_epoch: int) -> Progress:
    """The same point of training counted in batches of ``batch`` images instead of ``saved_batch``."""
    epoch_iter = min(round(progress.epoch_iter * saved_batch / batch), batches_per_epoch)
    return Progress(epoch=progress.epoch, epoch_iter=epoch_iter,
                    iteration=progress.epoch * batches_per_epoch + epoch_iter)


def _check_same_categories(categories: list[dict] | None, train_file: str | None, val_set: Any) -> None:
    """Evaluation maps labels back to category ids with the validation set's order, which must be
    the training set's."""
    val_categories = getattr(val_set, "categories", None)
    if categories is None or val_categories is None:
        return
    if [c["id"] for c in categories] != [c["id"] for c in val_categories]:
        raise ValueError(f"the training annotations ({train_file}) and the validation annotations "
                         f"({getattr(val_set, 'ann_file', 'the validation set')}) list different categories: ids "
                         f"{[c['id'] for c in categories]} vs {[c['id'] for c in val_categories]}")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = list(value) if isinstance(value, tuple) else value
    return flat


def _warn_config_changes(saved: dict[str, Any], current: dict[str, Any]) -> None:
    old, new = _flatten(saved), _flatten(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed and is_main_process():
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:10])
        warnings.warn(f"resuming with a config that differs from the checkpoint's: {details}", stacklevel=3)


def _save_environment(path: str, total_batch: int) -> None:
    """Git revision, versions and the launch command, beside the checkpoints for reproducibility."""
    revision = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no")
    with open(path, "w") as f:
        # the threads and the CPU too: a run's float rounding, and so its trajectory, depends on them
        json.dump({"git_revision": revision or None, "git_dirty": None if changes is None else bool(changes),
                   "torch": torch.__version__, "python": sys.version.split()[0], "threads": torch.get_num_threads(),
                   "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                   "world_size": get_world_size(), "total_batch": total_batch, "argv": sys.argv}, f, indent=2)


def _cpu_model() -> str | None:
    """The CPU's model name (Linux); oneDNN and ATen pick their kernels, and so their rounding, by it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def _git(*args: str) -> str | None:
    """The output of a git command in this package's checkout; None outside one or without git."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
