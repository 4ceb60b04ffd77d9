"""What the figures of a benchmark were measured on."""
from __future__ import annotations

import platform

import torch

__all__ = ["describe_device"]


def describe_device(device: str) -> str:
    """The GPU's name, or the CPU and its torch threads, with the torch version."""
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"
