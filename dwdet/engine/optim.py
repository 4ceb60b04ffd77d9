"""The optimiser (SGD, as the paper trains, or AdamW) with decay-free norms and scales, and the warmup +
step learning-rate schedule."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "REFERENCE_BATCH", "WarmupStepSchedule", "build_lr_scheduler", "build_optimizer",
           "decay_free_parameters", "scaled_lr"]

# Learning rates in configs are for this total batch size and scale linearly with it.
REFERENCE_BATCH = 16

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def scaled_lr(lr: float, total_batch: int) -> float:
    """The linear scaling rule: ``lr`` is for a total batch of 16."""
    return lr * total_batch / REFERENCE_BATCH


def decay_free_parameters(model: nn.Module) -> set[nn.Parameter]:
    """Parameters that weight decay would only distort: the weights and biases of normalisation
    layers (they set feature scales, not a function of the input) and scalar parameters such as
    FCOS's per-level ``Scale`` (decaying it would shrink every regression output of a level)."""
    free = {p for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(recurse=False)}
    free.update(p for p in model.parameters() if p.numel() == 1)
    return free


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(model: nn.Module, kind: str, *, lr: float, weight_decay: float, sgd_momentum: float,
                    adamw_betas: Sequence[float]) -> torch.optim.Optimizer:
    """``kind`` "sgd" (with ``sgd_momentum``) or "adamw" (with ``adamw_betas``), with two parameter
    groups: decayed, and :func:`decay_free_parameters` (no decay)."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    free = decay_free_parameters(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [g for g in ({"params": [p for p in trainable if p not in free], "weight_decay": weight_decay},
                          {"params": [p for p in trainable if p in free], "weight_decay": 0.0}) if g["params"]]
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(adamw_betas))
    return torch.optim.SGD(groups, lr=lr, momentum=sgd_momentum)


class WarmupStepSchedule:
    """lr factor at iteration ``i``: linear warmup from ``warmup_ratio`` to 1 over ``warmup_iters``,
    times ``gamma`` for every milestone iteration already reached. Picklable, so that LambdaLR's
    state dict (and therefore a checkpoint) carries it."""

    def __init__(self, warmup_iters: int, warmup_ratio: float, milestones: Sequence[int], gamma: float):
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.milestones = sorted(milestones)
        self.gamma = gamma

    def __call__(self, iteration: int) -> float:
        decay = self.gamma ** sum(iteration >= m for m in self.milestones)
        if iteration >= self.warmup_iters:
            return decay
        return decay * (self.warmup_ratio + (1.0 - self.warmup_ratio) * iteration / self.warmup_iters)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, iters_per_epoch: int, warmup_iters: int,
                       warmup_ratio: float, step_epochs: Sequence[int], gamma: float
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule; the lr drops by ``gamma`` at the start of each epoch in ``step_epochs``."""
    milestones = [epoch * iters_per_epoch for epoch in step_epochs]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupStepSchedule(warmup_iters, warmup_ratio,
                                                                            milestones, gamma))
