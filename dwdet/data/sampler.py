"""Training batches: aspect-ratio grouped, DDP-aware and deterministic, and the collate function.

A training epoch is a pure function of ``(seed, epoch)``: :class:`~torch.utils.data.DistributedSampler`
permutes the dataset with ``seed + epoch`` and hands each rank its share, the batches are formed from
that order, and every sample comes with its own seed for the random transforms. The engine's
:class:`dwdet.engine.loaders.EpochLoader` runs an epoch from any batch on (what a resume needs).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

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

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.epoch = epoch

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
        for batch in self._batches():
            yield [(index, int(seeds[index])) for index in batch]

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)


class SeededDataset(Dataset):
    """Wraps a dataset so that ``self[(index, seed)]`` loads ``dataset[index]`` with torch's RNG seeded
    by ``seed`` (restored afterwards): random transforms become a function of the sample's key."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getattr__(self, name: str):
        # the wrapped dataset's attributes (categories, ann_file, ...); "dataset" itself is looked
        # up here only while unpickling in a worker, before __init__'s attribute exists
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
