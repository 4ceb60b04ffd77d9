"""Small torch.distributed helpers that also work in a single process."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (the tensor itself in a single process); no gradient."""
    if not is_distributed():
        return tensor.detach()
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor.div_(get_world_size()))
    return tensor
