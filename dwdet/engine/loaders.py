"""Data loaders for the engine: reproducible, resumable training epochs and sharded evaluation.

A training batch sampler (from dwdet.data) yields lists of dataset indices for this rank, has a
``__len__`` (batches per epoch on this rank) and, if it shuffles, a ``set_epoch(epoch)`` after which
its order depends only on the epoch. That is all a mid-epoch resume needs: the sampler's first
batches are skipped as index lists, without loading their images.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dwdet.data.sampler import collate
from dwdet.engine.runtime import ignore_stop_signals, stop_signals_blocked
from dwdet.utils.dist import get_rank, get_world_size

__all__ = ["EpochLoader", "eval_loader", "to_device"]


def to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device
              ) -> tuple[list[torch.Tensor], list[dict]]:
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
               for t in targets]
    return images, targets


class _Loader(DataLoader):
    """A DataLoader whose workers leave SIGTERM and SIGINT to the main process, which saves a
    checkpoint (:mod:`dwdet.engine.runtime`): they are forked with the signals blocked and ignore them."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, worker_init_fn=ignore_stop_signals, **kwargs)

    def __iter__(self):
        with stop_signals_blocked():
            return super().__iter__()


class _SkippingBatchSampler(Sampler[list[int]]):
    def __init__(self, batch_sampler: Any):
        self.batch_sampler = batch_sampler
        self.start = 0

    def set_epoch(self, epoch: int, start: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batch_sampler), self.start, None)

    def __len__(self) -> int:
        return len(self.batch_sampler) - self.start


class EpochLoader:
    """A DataLoader whose epoch ``e`` is the same every time it is run, from any starting batch.

    Worker processes are seeded from ``seed`` and the epoch (not from the global RNG), so an epoch
    replays identically after a resume as long as the dataset's random transforms draw from the
    worker's RNG in sample order (bitwise-exact for ``num_workers=0``; with workers, exact when
    the transforms seed themselves from the sample index and epoch).
    """

    def __init__(self, dataset: Dataset, batch_sampler: Any, num_workers: int, seed: int,
                 pin_memory: bool = False):
        self.seed = seed
        self._sampler = _SkippingBatchSampler(batch_sampler)
        self._generator = torch.Generator()
        self._loader = _Loader(dataset, batch_sampler=self._sampler, num_workers=num_workers,
                               collate_fn=collate, pin_memory=pin_memory, generator=self._generator)

    def __len__(self) -> int:
        """Batches in a full epoch on this rank."""
        return len(self._sampler.batch_sampler)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        """Batches ``start, start + 1, ...`` of ``epoch``."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start batch {start} is outside the epoch's {len(self)} batches")
        self._sampler.set_epoch(epoch, start)
        self._generator.manual_seed(self.seed * 100_003 + epoch)
        return iter(self._loader)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, rank: int | None = None,
                world_size: int | None = None) -> DataLoader:
    """This rank's shard (every world-size-th image, no padding duplicates), in order; ``rank`` and
    ``world_size`` default to this process's."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    shard = range(rank, len(dataset), world_size)
    return _Loader(dataset, batch_size=batch_size, sampler=shard, num_workers=num_workers, collate_fn=collate)
