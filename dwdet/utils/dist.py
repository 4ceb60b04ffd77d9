"""torch.distributed helpers that also work in a single process."""
import torch
import torch.distributed as dist


def is_dist_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (the tensor itself without a process group).

    Used for loss normalisers, so every rank divides by the same number. Not differentiable:
    pass detached values."""
    if not is_dist_initialized():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(dist.get_world_size()))
    return tensor
