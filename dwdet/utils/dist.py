"""Distributed helpers (torch.distributed), all safe to call in a single process."""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["barrier", "gather_to_main", "get_rank", "get_world_size", "init_distributed", "is_distributed",
           "is_main_process", "local_device", "process_group", "reduce_mean"]


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


def local_device() -> torch.device:
    """This process's device: the GPU of its LOCAL_RANK (torchrun's), or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(timeout_minutes: float = 30.0) -> Iterator[torch.device]:
    """Join torchrun's process group (if launched by it) for the ``with`` block, yielding this
    process's device, and leave it at the end, errors included.

    Whatever used the group (a DDP model, a trainer) must be unreferenced by then: it is collected
    before the group is destroyed (gloo aborted a rank about one run in twelve when a DDP model
    outlived its group)."""
    opened = not is_distributed()
    device = init_distributed(timeout_minutes)
    try:
        yield device
    finally:
        if opened and is_distributed():
            gc.collect()
            dist.destroy_process_group()


def init_distributed(timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT), if any, and return this process's device.

    NCCL on GPU, gloo on CPU. A collective that waits longer than ``timeout_minutes`` fails with
    an error instead of hanging, so a rank that dies ends the job (torchrun then stops the others).
    """
    device = local_device()
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                timeout=datetime.timedelta(minutes=timeout_minutes),
                                device_id=device if use_cuda else None)
    return device
