"""The engine's loaders: a training epoch resumed from any batch equals the rest of the
uninterrupted epoch (indices, transform seeds and pixels, whatever the workers), and evaluation
shards see every image once, in order."""
import math

import pytest
import torch
from torch.utils.data import DistributedSampler

from dwdet.data.sampler import GroupedBatchSampler, SeededDataset, aspect_ratio_groups
from dwdet.data.transforms import RandomFlips
from dwdet.engine.loaders import EpochLoader, eval_loader
from tests.dwdet.data.test_data_sampler import ToyDataset, mixed_sizes, was_flipped


def grouped_loader(n, batch_size, workers, seed, rank=0, world_size=1, transforms=None):
    sizes = mixed_sizes(n)
    sampler = GroupedBatchSampler(DistributedSampler(range(n), world_size, rank, seed=seed),
                                  aspect_ratio_groups(sizes), batch_size)
    return EpochLoader(SeededDataset(ToyDataset(sizes, transforms)), sampler, workers, seed=seed)


def test_a_resumed_epoch_is_the_rest_of_the_uninterrupted_one():
    loader = grouped_loader(30, 4, workers=0, seed=9, rank=1, world_size=2)
    full = [[t["image_id"] for t in targets] for _, targets in loader.epoch(2)]
    assert len(full) == len(loader) == 4
    for start in range(len(full) + 1):
        assert [[t["image_id"] for t in targets] for _, targets in loader.epoch(2, start=start)] == full[start:]
    assert [[t["image_id"] for t in targets] for _, targets in loader.epoch(3)] != full
    with pytest.raises(ValueError, match="start batch 5 is outside the epoch's 4 batches"):
        loader.epoch(2, start=5)


def test_resume_is_exact_whatever_the_workers():
    sizes = mixed_sizes(14)
    full = list(grouped_loader(14, 3, workers=0, seed=4, transforms=RandomFlips()).epoch(1))
    assert len(full) == math.ceil(14 / 3)
    assert sorted(t["image_id"] for _, targets in full for t in targets) == list(range(14))
    flipped = [was_flipped(image, t["image_id"], sizes) for images, targets in full
               for image, t in zip(images, targets)]
    assert any(flipped) and not all(flipped)
    boxes_flipped = [t["boxes"][0, 0].item() != 0 for _, targets in full for t in targets]
    assert boxes_flipped == flipped  # each target is flipped with its own image

    rest = list(grouped_loader(14, 3, workers=2, seed=4, transforms=RandomFlips()).epoch(1, start=2))
    assert len(rest) == len(full) - 2
    for (images_a, targets_a), (images_b, targets_b) in zip(full[2:], rest):
        assert [t["image_id"] for t in targets_a] == [t["image_id"] for t in targets_b]
        assert all(torch.equal(a, b) for a, b in zip(images_a, images_b))
        assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(targets_a, targets_b))


def test_eval_shards_see_every_image_once_in_order():
    dataset = ToyDataset(mixed_sizes(11))
    shards = [[t["image_id"] for _, targets in eval_loader(dataset, 2, 0, rank, 3) for t in targets]
              for rank in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    batches = [[t["image_id"] for t in targets] for _, targets in eval_loader(ToyDataset(mixed_sizes(5)), 2, 0)]
    assert batches == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match=r"rank must be in \[0, 3\), got 3"):
        eval_loader(dataset, 2, 0, 3, 3)


def test_a_split_is_augmented_for_training_only_and_given_as_it_is_for_evaluation(tmp_path):
    from dwdet.config import load_config
    from dwdet.engine import builders
    from tests.dwdet.data.test_data_coco import ann, write_coco
    images = [{"id": 1, "width": 40, "height": 30}, {"id": 2, "width": 20, "height": 20}]
    root, ann_file, _ = write_coco(tmp_path, images, [ann(1, 1, 7, [2.0, 3.0, 10.0, 5.0])])
    cfg = load_config("configs/_base_/coco.py", ["data.root=/", f"data.train_images={root}",
                                                 f"data.train_ann={ann_file}", "data.flip=1.0", "data.vflip=1.0"])
    as_annotated = torch.tensor([[2.0, 3.0, 12.0, 8.0]])
    trained = builders.build_dataset(cfg, "train")
    assert trained.ids == [1]  # no image without a box to learn from
    torch.testing.assert_close(trained[0][1]["boxes"], torch.tensor([[28.0, 22.0, 38.0, 27.0]]))  # both flips
    evaluated = builders.build_dataset(cfg, "train", training=False)
    assert evaluated.ids == [1, 2]  # every image, as COCO's evaluation counts them
    torch.testing.assert_close(evaluated[0][1]["boxes"], as_annotated)
