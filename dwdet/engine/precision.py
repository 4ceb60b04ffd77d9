"""Mixed precision: the autocast context and the gradient scaler for an ``amp`` setting."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["AMP_MODES", "autocast", "grad_scaler"]

AMP_MODES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _dtype(amp: str) -> torch.dtype | None:
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {sorted(AMP_MODES)}, got {amp!r}")
    return AMP_MODES[amp]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16/fp16 on ``device``, or a no-op for ``amp="none"``."""
    dtype = _dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 (bf16 has fp32's range and needs none). When disabled
    it passes losses and steps through unchanged, so the training step has a single code path."""
    return torch.amp.GradScaler(device.type, enabled=_dtype(amp) is torch.float16)
