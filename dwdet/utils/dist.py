"""Distributed helpers (torch.distributed), all safe to call in a single process."""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["barrier", "gather_to_main", "get_rank", "get_world_size", "init_distributed", "is_distributed",
           "is_main_process", "reduce_mean"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks (a new tensor; the input is left unchanged)."""
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(get_world_size()), op=dist.ReduceOp.SUM)
    return tensor



def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable) as a list on rank 0, ``None`` on the other ranks."""
    if not is_distributed():
        return [obj]
    gathered = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def init_distributed(timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT), if any, and return this process's device.

    NCCL on GPU, gloo on CPU. A collective that waits longer than ``timeout_minutes`` fails with
    an error instead of hanging, so a rank that dies ends the job (torchrun then stops the others).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                timeout=datetime.timedelta(minutes=timeout_minutes),
                                device_id=device if use_cuda else None)
    return device
