"""The backbone probe (lab.probe, lab/probe_backbone.py): features sampled where the
objects are, the linear fit, and the tool end to end on a tiny synthetic set."""
import json
import os

import pytest
import torch
from torch import nn

from torch.utils.data import Subset

import lab.probe_backbone as probe_backbone_tool
from dwdet.data import CocoDetection
from dwdet.models.transform import DetectionTransform
from lab.probe import centre_features, fit_linear, probe_backbone
from lab.synthetic import ensure_synthetic

TINY = dict(colours=2, num_train=12, num_val=6, image_size=96, min_objects=1, max_objects=3, min_object_size=12)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe") / "tiny"
    return root, ensure_synthetic(root, seed=0, **TINY)


class CoordinateBackbone(nn.Module):
    """A stand-in ResNet whose every map holds, per cell, the mean x (channel 0) and y (channel 1)
    of the input pixel centres it covers, at the strides 8, 16 and 32 of C3-C5."""

    def __init__(self):
        super().__init__()
        self.bn1 = self.relu = self.maxpool = self.layer1 = nn.Identity()
        self.layer2, self.layer3, self.layer4 = nn.AvgPool2d(8), nn.AvgPool2d(2), nn.AvgPool2d(2)

    def conv1(self, x):
        height, width = x.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        return torch.stack((xs, ys))[None].expand(len(x), 2, height, width)


def objects(paths, split):
    return CocoDetection(*map(str, paths[split]), filter_empty=True)


def test_features_are_read_at_the_box_centres(tiny_set):
    root, paths = tiny_set
    dataset = objects(paths, "train")
    features, labels, areas = centre_features(CoordinateBackbone(), dataset, DetectionTransform(96, 96))
    boxes = torch.cat([target["boxes"] for _, target in dataset])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert features.shape == (len(boxes), 6)
    # bilinear sampling of a linear ramp gives the ramp's value, except within half a cell of the
    # border, where grid_sample's zero padding pulls the value towards zero
    for level, stride in enumerate((8, 16, 32)):
        sampled = features[:, 2 * level:2 * level + 2]
        inside = ((centres >= stride / 2) & (centres <= 96 - stride / 2)).all(1)  # 96: no padding
        torch.testing.assert_close(sampled[inside], centres[inside], atol=1e-3, rtol=0)
    assert labels.tolist() == torch.cat([target["labels"] for _, target in dataset]).tolist()
    torch.testing.assert_close(areas, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def test_features_follow_the_detectors_resize(tiny_set):
    root, paths = tiny_set
    dataset = Subset(objects(paths, "train"), range(3))
    full, _, _ = centre_features(CoordinateBackbone(), dataset, DetectionTransform(96, 96))
    half, _, _ = centre_features(CoordinateBackbone(), dataset, DetectionTransform(48, 48))  # half size
    # the C3 x coordinate of a centre away from the border halves with the image
    boxes = torch.cat([target["boxes"] for _, target in dataset])
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    inside = (centre_x > 8) & (centre_x < 88)
    torch.testing.assert_close(half[inside, 0], full[inside, 0] / 2, atol=0.5, rtol=0)


def test_linear_fit_separates_separable_classes_and_folds_the_standardisation():
    torch.manual_seed(0)
    centres = torch.randn(5, 16) * 4
    labels = torch.arange(5).repeat_interleave(40)
    features = centres[labels] + 0.3 * torch.randn(len(labels), 16) + 100  # far from zero mean
    classifier = fit_linear(features, labels, 5)
    assert (classifier(features).argmax(1) == labels).all()
    fresh = centres[labels] + 0.3 * torch.randn(len(labels), 16) + 100
    assert (classifier(fresh).argmax(1) == labels).float().mean() > 0.95


def test_probe_backbone_reports_top1_by_size_and_by_shape_and_hue(tiny_set):
    root, paths = tiny_set
    train, val = objects(paths, "train"), objects(paths, "val")
    result = probe_backbone("resnet10", None, train, val, 16, DetectionTransform(96, 96), colours=2)
    assert result["objects"] == {"train": sum(len(t["labels"]) for _, t in train),
                                 "val": sum(len(t["labels"]) for _, t in val)}
    for key in ("top1", "train_top1", "kind_right", "hue_right"):
        assert 0 <= result[key] <= 1
    assert result["kind_right"] >= result["top1"] and result["hue_right"] >= result["top1"]
    assert result["train_top1"] > 0.9  # a handful of objects in 896 dimensions: the fit separates them


def tiny_config(tmp_path, root):
    config = tmp_path / "tiny.py"
    params = ", ".join(f"{k}={v!r}" for k, v in TINY.items())
    config.write_text(f'_base_ = "{os.path.abspath("configs/lab/dw_r10_shapes80.py")}"\n'
                      f'model = dict(num_classes=16, min_size=(96,), max_size=96)\n'
                      f'data = dict(root="{root}", params=dict({params}))\n')
    return str(config)


def test_probe_tool_prints_a_line_per_backbone(tiny_set, capsys, tmp_path):
    config = tiny_config(tmp_path, tiny_set[0])
    assert probe_backbone_tool.main([config, "none", "--max-train-images", "8"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["weights"] == "none" and 0 <= line["top1"] <= 1


def test_probe_tool_names_a_missing_backbone_file(tiny_set, tmp_path):
    config = tiny_config(tmp_path, tiny_set[0])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        probe_backbone_tool.main([config, str(tmp_path / "missing.pth")])
