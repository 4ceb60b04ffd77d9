import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DistributedSampler, RandomSampler

from dwdet.data.sampler import GroupedBatchSampler, SeededDataset, aspect_ratio_groups, collate
from dwdet.data.transforms import RandomFlips


class ToyDataset(torch.utils.data.Dataset):
    """Images whose pixels encode their index, with one box each; optional random flip."""

    def __init__(self, image_sizes, transforms=None):
        self.image_sizes = image_sizes
        self.transforms = transforms

    def __len__(self):
        return len(self.image_sizes)

    def __getitem__(self, index):
        height, width = self.image_sizes[index]
        image = torch.arange(height * width, dtype=torch.float32).reshape(1, height, width).expand(3, -1, -1) + index
        target = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0]]), "labels": torch.tensor([index % 3]),
                  "image_id": index}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def mixed_sizes(n):
    return [(4, 6) if (i * 7) % 5 < 3 else (6, 4) for i in range(n)]  # ~60% landscape, ~40% portrait


def rank_batches(n, batch_size, world_size, epoch=0, seed=0):
    groups = aspect_ratio_groups(mixed_sizes(n))
    out = []
    for rank in range(world_size):
        sampler = GroupedBatchSampler(DistributedSampler(range(n), world_size, rank, seed=seed), groups, batch_size)
        sampler.set_epoch(epoch)
        out.append([[index for index, _ in batch] for batch in sampler])
    return out, groups


def test_aspect_ratio_groups():
    assert aspect_ratio_groups([(480, 640), (640, 480), (500, 500)]) == [0, 1, 0]


def test_batches_group_by_aspect_and_cover_the_dataset_once_across_ranks():
    per_rank, groups = rank_batches(n=50, batch_size=3, world_size=2)
    seen = Counter(index for batches in per_rank for batch in batches for index in batch)
    assert sorted(seen) == list(range(50)) and set(seen.values()) == {1}
    for batches in per_rank:
        assert len(batches) == math.ceil(25 / 3)
        assert all(len(batch) == 3 for batch in batches[:-1])
        mixed = [batch for batch in batches if len({groups[i] for i in batch}) > 1]
        assert len(mixed) <= 1  # only where the two groups' leftovers meet, at the end
        assert all(len({groups[i] for i in batch}) == 1 for batch in batches[:-2])


@pytest.mark.parametrize("n, batch_size, world_size", [(7, 2, 2), (31, 4, 3), (5, 8, 2), (64, 2, 8), (3, 1, 4)])
def test_every_rank_yields_the_same_number_of_batches(n, batch_size, world_size):
    per_rank, _ = rank_batches(n, batch_size, world_size)
    share = math.ceil(n / world_size)  # DistributedSampler pads by repeating a few indices
    assert all(len(batches) == math.ceil(share / batch_size) for batches in per_rank)
    assert all(sorted(i for b in batches for i in b) == sorted(set(i for b in batches for i in b))
               for batches in per_rank)  # no index twice within a rank
    assert set(i for batches in per_rank for b in batches for i in b) == set(range(n))


def test_epochs_are_a_function_of_seed_and_epoch():
    assert rank_batches(40, 2, 2, epoch=3, seed=5) == rank_batches(40, 2, 2, epoch=3, seed=5)
    assert rank_batches(40, 2, 2, epoch=3, seed=5) != rank_batches(40, 2, 2, epoch=4, seed=5)
    assert rank_batches(40, 2, 2, epoch=3, seed=5) != rank_batches(40, 2, 2, epoch=3, seed=6)


def test_sampler_argument_errors():
    with pytest.raises(TypeError, match="must be a torch.utils.data.DistributedSampler"):
        GroupedBatchSampler(RandomSampler(range(4)), [0] * 4, 2)
    with pytest.raises(ValueError, match="3 group ids for a dataset of 4 items"):
        GroupedBatchSampler(DistributedSampler(range(4), 1, 0), [0] * 3, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        GroupedBatchSampler(DistributedSampler(range(4), 1, 0), [0] * 4, 0)


def was_flipped(image, index, sizes):
    return not torch.equal(image, ToyDataset(sizes)[index][0])


def test_seeded_dataset_makes_transforms_a_function_of_the_key():
    sizes = mixed_sizes(4)
    dataset = SeededDataset(ToyDataset(sizes, RandomFlips()))
    flips = {seed: was_flipped(dataset[(1, seed)][0], 1, sizes) for seed in range(20)}
    assert set(flips.values()) == {True, False}  # both outcomes occur over seeds
    for seed in range(20):  # and each is reproducible, whatever the global RNG state
        torch.manual_seed(1000 + seed)
        assert was_flipped(dataset[(1, seed)][0], 1, sizes) == flips[seed]
    state = torch.get_rng_state()
    dataset[(0, 123)]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was


def test_collate_keeps_images_apart():
    items = [(torch.zeros(3, 4, 5), {"image_id": 1}), (torch.ones(3, 6, 2), {"image_id": 2})]
    images, targets = collate(items)
    assert isinstance(images, list) and [i.shape for i in images] == [(3, 4, 5), (3, 6, 2)]
    assert targets == [{"image_id": 1}, {"image_id": 2}]


def test_seeded_dataset_shows_the_wrapped_datasets_attributes_and_pickles():
    import pickle
    dataset = ToyDataset(mixed_sizes(3))
    dataset.categories = [{"id": 5, "name": "five"}]
    wrapped = SeededDataset(dataset)
    assert wrapped.categories == dataset.categories and wrapped.image_sizes == dataset.image_sizes
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute
    again = pickle.loads(pickle.dumps(wrapped))  # as DataLoader workers receive it
    assert again.categories == dataset.categories and torch.equal(again[(1, 7)][0], wrapped[(1, 7)][0])
