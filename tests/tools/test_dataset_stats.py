"""tools/dataset_stats.py: the points per image against the detector's own feature maps, and the
per-object statistics against a count done here."""
import json

import pytest
import torch

from lab.synthetic import ensure_synthetic
from dwdet.models import build_fcos
from tests.tools.test_tools import load_tool

dataset_stats = load_tool("dataset_stats")


@pytest.mark.parametrize("size", [(384, 288), (288, 384), (100, 70), (800, 1333)])
def test_points_per_image_match_the_feature_maps(size):
    model = build_fcos(3, None, backbone="resnet10", backbone_weights=None, backbone_norm="gn", channels=32,
                       min_size=max(size), max_size=max(size)).eval()
    height = width = None
    with torch.no_grad():
        batch, _ = model.transform([torch.rand(3, *size)])
        height, width = batch.tensors.shape[-2:]
        maps = model.backbone(batch.tensors).values()
    assert dataset_stats.points_per_image(height, width) == sum(m.shape[-2] * m.shape[-1] for m in maps)


def test_statistics_of_a_small_set(tmp_path):
    paths = ensure_synthetic(tmp_path / "s", seed=0, colours=2, num_train=6, num_val=0, image_size=128,
                             min_objects=1, max_objects=3, min_object_size=8)
    coco = json.loads(paths["train"].annotations.read_text())
    stats = dataset_stats.dataset_stats(str(paths["train"].annotations), short_side=128, max_size=128)
    objects = len(coco["annotations"])
    points = sum(dataset_stats.points_per_image(i["height"], i["width"]) for i in coco["images"])
    assert stats["images"] == 6 and stats["classes"] == 16 and stats["objects_per_image"] == objects / 6
    assert stats["scores_per_object"] == pytest.approx(points * 16 / objects)
    assert stats["small"] + stats["medium"] + stats["large"] == pytest.approx(1.0)
    assert stats["small"] == sum(a["area"] < 1024 for a in coco["annotations"]) / objects
