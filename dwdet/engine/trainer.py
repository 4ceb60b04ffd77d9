"""Training runs: :class:`Trainer` builds a run, starts it afresh, from other weights or from a
checkpoint, and around the loop of :mod:`dwdet.engine.loop` saves, evaluates and stops; for one
process or torchrun DDP (inside :func:`dwdet.utils.dist.process_group`).

The config keys read here (``train`` and ``eval`` sections):

    train.epochs, train.batch_size (per process), train.lr (for a total batch of 16; scaled
    linearly), train.optimizer ("sgd" | "adamw"), train.sgd_momentum, train.adamw_betas,
    train.weight_decay, train.warmup_iters, train.warmup_ratio, train.lr_steps (epochs after which
    the lr drops), train.lr_gamma, train.clip_grad_norm (0 = off), train.ema, train.ema_decay,
    train.ema_tau (:mod:`dwdet.engine.ema`), train.amp ("none" | "bf16" | "fp16"), train.nonfinite
    ("stop" | "skip"), train.seed, train.deterministic, train.init_from, train.num_workers,
    train.log_interval (iterations),
    train.checkpoint_interval (epochs between kept ``epoch_N.pth``; 0 = only the last),
    train.keep_checkpoints (how many ``epoch_N.pth`` to keep, the newest; 0 = all),
    train.checkpoint_iters (also save ``last.pth`` every N iterations; 0 = off), train.tensorboard,
    eval.interval (epochs; 0 = never during training), eval.batch_size, eval.num_workers.

``model.num_classes`` is taken from the training dataset's categories (an explicit value must agree).
Checkpoints carry the resolved config, the categories in label order and the input normalisation,
so that a checkpoint alone is enough for inference (:func:`dwdet.engine.builders.load_detector`).
The run folder gets ``train.log`` (:func:`dwdet.utils.logger.setup_logging`).
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dwdet.config import Config, save_config
from dwdet.engine import builders
from dwdet.engine.checkpoint import CheckpointError, link_or_copy, load_checkpoint, rng_state, save_checkpoint, \
    set_rng_state
from dwdet.engine.compat import migrate_config
from dwdet.engine.ema import ModelEMA
from dwdet.engine.evaluation import CocoEvaluator, evaluate, metrics_table
from dwdet.engine.loaders import EpochLoader, eval_loader
from dwdet.engine.loop import NonFiniteLossError, Progress, StepOptions, TrainState, train_steps
from dwdet.engine.metrics import MetricsLog
from dwdet.engine.optim import build_lr_scheduler, build_optimizer, scaled_lr
from dwdet.engine.precision import grad_scaler
from dwdet.engine.runtime import StopRequest, cpu_has_bf16, save_environment, seed_everything
from dwdet.utils.dist import barrier, gather_to_main, get_rank, get_world_size, is_distributed, is_main_process, \
    local_device
from dwdet.utils.logger import setup_logging

__all__ = ["NonFiniteLossError", "RunFolderInUseError", "Trainer", "check_new_run_folder"]

logger = logging.getLogger(__name__)

ModelBuilder = Callable[[Config], nn.Module]
TrainDataBuilder = Callable[[Config], tuple[Any, Any]]
ValDataBuilder = Callable[[Config], tuple[Any, CocoEvaluator]]

# what marks a folder as holding a run: its checkpoints or its metrics
_RUN_FILES = ("last.pth", "metrics.jsonl")


class RunFolderInUseError(FileExistsError):
    """A new run was started in a folder that holds another run."""


class Trainer:
    """A training run in ``work_dir``: build everything, optionally resume, then :meth:`fit`.

    The builders default to the real detector and COCO data (:mod:`dwdet.engine.builders`).
    Call from every rank under torchrun, inside :func:`dwdet.utils.dist.process_group`.
    """

    def __init__(self, cfg: Config, work_dir: str | os.PathLike, resume: str | os.PathLike | None = None, *,
                 build_model: ModelBuilder | None = None, build_train_data: TrainDataBuilder | None = None,
                 build_val_data: ValDataBuilder | None = None, allow_world_size_change: bool = False):
        self.work_dir = os.fspath(work_dir)
        if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
            raise RuntimeError("launched by torchrun, but the process group is not open: create the Trainer "
                               "inside `with dwdet.utils.dist.process_group():` (as dwdet-train does)")
        self.device = local_device()
        rank, world_size = get_rank(), get_world_size()
        setup_logging(self.work_dir)
        self.allow_world_size_change = allow_world_size_change

        cfg = Config(migrate_config(cfg.to_dict()))
        train = cfg.train
        dataset, batch_sampler = (build_train_data or builders.build_train_data)(cfg)
        _log_data_stats("training", dataset)
        # label k is the k-th category of the training annotation file; None for a dataset without
        # categories (then model.num_classes must be given)
        self.categories = getattr(dataset, "categories", None)
        if self.categories is not None:
            cfg = builders.resolve_num_classes(cfg, self.categories, getattr(dataset, "ann_file", "the training set"))
        self.cfg = cfg

        seed_everything(train.seed, train.deterministic)  # the same initial weights on every rank
        self.model = (build_model or builders.build_model)(cfg).to(self.device)
        if train.init_from and resume is None:
            builders.init_weights(self.model, train.init_from, cfg.model.num_classes)
        seed_everything(train.seed + rank, train.deterministic)  # then different randomness per rank
        module: nn.Module = self.model
        if is_distributed():
            module = DistributedDataParallel(self.model,
                                             device_ids=[self.device] if self.device.type == "cuda" else None)

        self.loader = EpochLoader(dataset, batch_sampler, train.num_workers, seed=train.seed + rank,
                                  pin_memory=self.device.type == "cuda")
        if len(self.loader) == 0:
            raise ValueError(f"the training batch sampler yields no batches on rank {rank}")
        self.total_batch = train.batch_size * world_size
        lr = scaled_lr(train.lr, self.total_batch)
        logger.info("lr %.4g: train.lr=%g is for a total batch of 16; this run's is %d (%d process(es) x "
                    "train.batch_size=%d)", lr, train.lr, self.total_batch, world_size, train.batch_size)
        optimizer = build_optimizer(self.model, train.optimizer, lr=lr, weight_decay=train.weight_decay,
                                    sgd_momentum=train.sgd_momentum, adamw_betas=train.adamw_betas)
        self.state = TrainState(
            module=module, optimizer=optimizer,
            lr_scheduler=build_lr_scheduler(optimizer, len(self.loader), train.warmup_iters, train.warmup_ratio,
                                            train.lr_steps, train.lr_gamma),
            scaler=grad_scaler(self.device, train.amp), progress=Progress(),
            ema=ModelEMA(self.model, train.ema_decay, train.ema_tau) if train.ema else None)
        self.options = StepOptions.from_config(train)
        if self.device.type == "cpu" and train.amp == "bf16" and cpu_has_bf16() is False:
            logger.warning("train.amp=bf16 on a CPU without bf16 instructions (AVX512-BF16, AMX): autocast "
                           "converts every operand, and a training step takes several times its float32 time "
                           "(tools/bench_train.py --amp none bf16 measures it); train.amp=none trains faster here")

        self.val_loader = self.evaluator = None
        if cfg.eval.interval > 0:
            val_set, self.evaluator = (build_val_data or builders.build_val_data)(cfg)
            _log_data_stats("validation", val_set)
            _check_same_categories(self.categories, getattr(dataset, "ann_file", None), val_set)
            self.val_loader = eval_loader(val_set, cfg.eval.batch_size, cfg.eval.num_workers)
        self.log = MetricsLog(self.work_dir, tensorboard=train.tensorboard)
        if resume is not None:
            self.resume(resume)

    # the parts of the state that callers read
    optimizer = property(lambda self: self.state.optimizer)
    lr_scheduler = property(lambda self: self.state.lr_scheduler)
    scaler = property(lambda self: self.state.scaler)
    progress = property(lambda self: self.state.progress)
    ema = property(lambda self: self.state.ema)

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
        keep a copy named ``keep_as``, then drop the epoch checkpoints beyond ``train.keep_checkpoints``."""
        rng = gather_to_main(rng_state())
        if is_main_process():
            save_checkpoint({**self.state_dict(), "rng": rng}, self.last_checkpoint)
            if keep_as:
                link_or_copy(self.last_checkpoint, os.path.join(self.work_dir, keep_as))
                _drop_old_epoch_checkpoints(self.work_dir, self.cfg.train.keep_checkpoints)
        barrier()

    def resume(self, path: str | os.PathLike) -> None:
        """Continue exactly where the checkpoint at ``path`` stopped (same world size and batch).

        With ``allow_world_size_change``, a checkpoint of another world size or per-process batch
        continues too, inexactly: at the same number of images into the epoch (rounded to whole
        batches) and the schedule's lr at the new iteration count, with this run's data sharding
        and fresh random streams."""
        ckpt = load_checkpoint(path)  # on CPU; load_state_dict copies to the parameters' device
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{path} holds weights only (an exported or converted checkpoint), not a "
                                  f"training state to resume; start a run from its weights with "
                                  f"train.init_from={path}")
        saved = (ckpt["world_size"], ckpt["batch_size"])
        current = (get_world_size(), self.cfg.train.batch_size)
        if saved != current and not self.allow_world_size_change:
            raise CheckpointError(
                f"{path} was written by {saved[0]} processes x batch {saved[1]}; this run has {current[0]} x "
                f"{current[1]}. An exact resume needs the same data sharding: relaunch with the same number of "
                f"processes and train.batch_size, or pass --allow-world-size-change to continue inexactly.")
        _warn_config_changes(ckpt["config"], self.cfg.to_dict())
        optimizers = (ckpt["config"]["train"]["optimizer"], self.cfg.train.optimizer)
        if optimizers[0] != optimizers[1]:  # their states hold different buffers
            raise CheckpointError(f"{path} was trained with train.optimizer={optimizers[0]!r}; this run has "
                                  f"{optimizers[1]!r}. Resume with the checkpoint's optimizer, or start a new run "
                                  f"from its weights with train.init_from.")
        state = self.state
        self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if state.ema is not None and "ema_updates" in ckpt:
            state.ema.load_state_dict(ckpt["model"], ckpt["ema_updates"])
        elif state.ema is not None:
            state.ema = ModelEMA(self.model, state.ema.decay, state.ema.tau)
            logger.info("%s has no weight average (trained without train.ema): the average starts from its "
                        "weights", path)
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scaler.load_state_dict(ckpt["scaler"])
        if saved == current:
            state.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
            state.progress = Progress(**ckpt["progress"])
            set_rng_state(ckpt["rng"][get_rank()])
        else:
            state.progress = _rescaled_progress(Progress(**ckpt["progress"]), saved[0] * saved[1],
                                                current[0] * current[1], len(self.loader))
            self._set_schedule_iteration(state.progress.iteration)
            warnings.warn(f"resuming {path} ({saved[0]} processes x batch {saved[1]}) with {current[0]} x "
                          f"{current[1]}: not an exact resume (the data order and random streams differ); "
                          f"continuing at epoch {state.progress.epoch + 1}, batch {state.progress.epoch_iter}",
                          stacklevel=2)
        if state.progress.epoch >= self.cfg.train.epochs:
            logger.info("resumed from %s: the run has finished its %d epochs (iteration %d); nothing to train "
                        "(raise train.epochs to train on)", path, state.progress.epoch, state.progress.iteration)
        else:
            logger.info("resumed from %s: epoch %d, batch %d (iteration %d)", path, state.progress.epoch + 1,
                        state.progress.epoch_iter, state.progress.iteration)

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
        last evaluation's metrics on rank 0). On SIGTERM or SIGINT, saves ``last.pth`` and returns
        "interrupted"; a non-finite loss with ``nonfinite="stop"`` raises and saves nothing.
        """
        train = self.cfg.train
        epochs = train.epochs
        if is_main_process():
            save_config(self.cfg, os.path.join(self.work_dir, "config.json"))
            save_environment(os.path.join(self.work_dir, "environment.json"), self.total_batch)
        metrics = None
        try:
            with StopRequest() as stop:
                while self.progress.epoch < epochs:
                    if self._train_epoch(stop):
                        self.save()
                        logger.warning("stopped by %s at epoch %d, iteration %d; %s holds the run: continue it "
                                       "with --resume", stop.signal_name, self.progress.epoch + 1,
                                       self.progress.iteration, self.last_checkpoint)
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
        """The rest of the current epoch, with the ``last.pth`` of ``train.checkpoint_iters``; True if
        stopped early, else moves progress to the next epoch."""
        state, every = self.state, self.cfg.train.checkpoint_iters
        set_epoch = getattr(self.model, "set_epoch", None)
        if set_epoch is not None:  # a model with an epoch schedule (TOOD's loss warm-up)
            set_epoch(state.progress.epoch)
        batches = self.loader.epoch(state.progress.epoch, start=state.progress.epoch_iter)
        stopped = False
        for stopped in train_steps(state, batches, self.options, self.device, self.log, stop,
                                   total_iters=self.cfg.train.epochs * len(self.loader)):
            if every and state.progress.iteration % every == 0 and not stopped:
                self.save()
        if not stopped:
            state.progress = Progress(epoch=state.progress.epoch + 1, iteration=state.progress.iteration)
        return stopped

    def _result(self, status: str, metrics: dict[str, float] | None) -> dict[str, Any]:
        return {"status": status, "epoch": self.progress.epoch, "iteration": self.progress.iteration,
                "metrics": metrics}


def check_new_run_folder(work_dir: str | os.PathLike) -> None:
    """Refuse (:class:`RunFolderInUseError`) to start a new run in a folder that holds one (its
    checkpoint or metrics), which it would overwrite and interleave with."""
    found = [name for name in _RUN_FILES if os.path.exists(os.path.join(work_dir, name))]
    if found:
        raise RunFolderInUseError(
            f"{work_dir} already holds a run ({', '.join(found)}): continue it with --resume, or give this run "
            f"another --work-dir (or delete that folder)")


def _drop_old_epoch_checkpoints(work_dir: str, keep: int) -> None:
    """Delete all but the ``keep`` newest ``epoch_N.pth`` of ``work_dir`` (``keep`` 0: none)."""
    if keep <= 0:
        return
    numbered = []
    for path in glob.glob(os.path.join(work_dir, "epoch_*.pth")):
        match = re.fullmatch(r"epoch_(\d+)\.pth", os.path.basename(path))
        if match:
            numbered.append((int(match.group(1)), path))
    for _, path in sorted(numbered)[:-keep]:
        os.remove(path)


def _log_data_stats(split: str, dataset: Any) -> None:
    """What the dataset left out of its annotation file (CocoDetection's ``stats``), if anything."""
    stats = getattr(dataset, "stats", None)
    if stats is not None and hasattr(stats, "describe"):
        logger.info("%s set (%s): %s", split, getattr(dataset, "ann_file", "?"), stats.describe())


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
    # custom_imports names the code that provides the data, not the run's settings (and runs saved
    # before the key have none)
    old, new = (_flatten({k: v for k, v in c.items() if k != "custom_imports"}) for c in (saved, current))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed and is_main_process():
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:10])
        warnings.warn(f"resuming with a config that differs from the checkpoint's: {details}", stacklevel=3)
