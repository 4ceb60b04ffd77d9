"""Batching: aspect-ratio grouped, DDP-aware, deterministic and resumable training batches; sharded
evaluation batches.

A training epoch is a pure function of ``(seed, epoch)``: :class:`~torch.utils.data.DistributedSampler`
permutes the dataset with ``seed + epoch`` and hands each rank its share, the batches are formed from
that order, and every sample comes with its own seed for the random transforms. Resuming therefore
only needs the epoch and the number of batches already consumed in it::

    loader = build_train_loader(dataset, batch_size=2, workers=4, seed=0, distributed=True)
    for epoch in range(start_epoch, num_epochs):
        loader.batch_sampler.set_epoch(epoch, start_batch=consumed if epoch == start_epoch else 0)
        for images, targets in loader:
            ...
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

SampleKey = tuple[int, int]  # (dataset index, seed of its random transforms)


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...]`` -> ``([images], [targets])``: images keep their own sizes."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def aspect_ratio_groups(image_sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Group id per image from its (height, width): 0 when width >= height, 1 otherwise."""
    return [0 if width >= height else 1 for height, width in image_sizes]


class GroupedBatchSampler(Sampler[list[SampleKey]]):
    """Batches of images of the same aspect group, from one rank's share of a DistributedSampler.

    Indices are taken in the sampler's order and a batch is emitted whenever a group collects
    ``batch_size`` of them. The leftovers of all groups are batched together at the end of the
    epoch, so each rank yields exactly ``ceil(len(sampler) / batch_size)`` batches (equal on every
    rank, as DDP needs) holding each index of its share exactly once; at most ``number of groups``
    batches per epoch mix aspects.

    Each index is yielded with a per-sample seed drawn from ``(sampler.seed, epoch)`` for
    :class:`SeededDataset`, so the random transforms do not depend on worker scheduling or resumes.
    """

    def __init__(self, sampler: DistributedSampler, group_ids: Sequence[int], batch_size: int) -> None:
        if not isinstance(sampler, DistributedSampler):
            raise TypeError(f"sampler must be a torch.utils.data.DistributedSampler (use num_replicas=1, "
                            f"rank=0 without DDP), got {type(sampler).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(group_ids) != len(sampler.dataset):
            raise ValueError(f"{len(group_ids)} group ids for a dataset of {len(sampler.dataset)} items")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and skip its first ``start_batch`` batches (those consumed before a resume)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must be in [0, {self.batches_per_epoch}], got {start_batch}")
        self.sampler.set_epoch(epoch)
        self.epoch = epoch
        self.start_batch = start_batch

    def _batches(self) -> list[list[int]]:
        batches, buffers = [], defaultdict(list)
        for index in self.sampler:
            buffer = buffers[self.group_ids[index]]
            buffer.append(index)
            if len(buffer) == self.batch_size:
                batches.append(buffer[:])
                buffer.clear()
        leftovers = [index for group in sorted(buffers) for index in buffers[group]]
        batches += [leftovers[i:i + self.batch_size] for i in range(0, len(leftovers), self.batch_size)]
        return batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        seeds = np.random.default_rng([self.sampler.seed, self.epoch]).integers(2**63, size=len(self.group_ids))
        for batch in self._batches()[self.start_batch:]:
            yield [(index, int(seeds[index])) for index in batch]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


class SeededDataset(Dataset):
    """Wraps a dataset so that ``self[(index, seed)]`` loads ``dataset[index]`` with torch's RNG seeded
    by ``seed`` (restored afterwards): random transforms become a function of the sample's key."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` in order, without padding: every index is seen by
    exactly one rank, as evaluation needs (shards may differ in length by one)."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.indices = range(rank, num_samples, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _rank_and_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("distributed=True needs an initialised torch.distributed process group "
                           "(launch with torchrun and call init_process_group first)")
    return dist.get_rank(), dist.get_world_size()


def build_train_loader(dataset: Dataset, batch_size: int, workers: int, seed: int,
                       distributed: bool = False) -> DataLoader:
    """Training loader: shuffled, aspect-ratio grouped, reproducible from ``seed`` and resumable.

    ``dataset`` needs ``image_sizes`` (a (height, width) per item, e.g. :class:`CocoDetection`);
    ``batch_size`` is per process. Call ``loader.batch_sampler.set_epoch(epoch, start_batch)`` before
    each epoch (see the module docstring).
    """
    if not hasattr(dataset, "image_sizes"):
        raise TypeError(f"{type(dataset).__name__} has no image_sizes, which aspect-ratio grouping needs")
    rank, world_size = _rank_and_world(distributed)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    batch_sampler = GroupedBatchSampler(sampler, aspect_ratio_groups(dataset.image_sizes), batch_size)
    return DataLoader(SeededDataset(dataset), batch_sampler=batch_sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0)


def build_eval_loader(dataset: Dataset, batch_size: int = 1, workers: int = 2,
                      distributed: bool = False) -> DataLoader:
    """Evaluation loader: in order, each image on exactly one rank (gather the results afterwards)."""
    rank, world_size = _rank_and_world(distributed)
    batch_sampler = BatchSampler(ShardSampler(len(dataset), rank, world_size), batch_size, drop_last=False)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available())
