"""An exponential moving average of the model's weights (``train.ema``), evaluated and saved for
inference in place of the last training weights.

After each optimiser step that was taken, every trainable parameter of the average moves towards
the model's by ``1 - d``, with ``d = decay * (1 - exp(-updates / tau))``: the warm-up keeps ``d``
small while the first weights are still far from good, so the average does not carry the random
initialisation along. The other parameters and the buffers (frozen BatchNorm statistics) are copied.
The horizon of the average is about ``1 / (1 - decay)`` updates; ``tau`` is how fast it grows to it.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """The average of ``model``'s weights; ``module`` is a copy of the model holding it (eval mode)."""

    def __init__(self, model: nn.Module, decay: float, tau: float, updates: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"config key train.ema_decay must be in [0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"config key train.ema_tau must be positive (iterations), got {tau}")
        self.decay, self.tau, self.updates = decay, tau, updates
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = self._match(model)

    def _match(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor],
                                                 list[torch.Tensor]]:
        """(averaged, source) lists of the trainable parameters, then of everything else in the state."""
        own = dict(self.module.named_parameters())
        averaged, sources, copied, copy_sources = [], [], [], []
        for name, param in model.named_parameters():
            (sources if param.requires_grad else copy_sources).append(param.detach())
            (averaged if param.requires_grad else copied).append(own[name])
        own_buffers = dict(self.module.named_buffers())
        for name, buffer in model.named_buffers():
            copy_sources.append(buffer)
            copied.append(own_buffers[name])
        return averaged, sources, copied, copy_sources

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average after one optimiser step of the model it was made from."""
        self.updates += 1
        averaged, sources, copied, copy_sources = self._pairs
        if averaged:
            torch._foreach_lerp_(averaged, sources, 1.0 - self.current_decay())
        for target, source in zip(copied, copy_sources):
            target.copy_(source)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates
