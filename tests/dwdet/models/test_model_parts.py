"""Backbone + FPN, FCOS head, box refinement and the anchor-point layout."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, deform_conv2d

from dwdet.models import (BACKBONES, FCOSHead, anchor_points, build_backbone, build_resnet, flatten_levels,
                          refine_distances)

STRIDES = (8, 16, 32, 64, 128)


# ---- anchor points ----------------------------------------------------------------------------------

def test_anchor_points_hand_values():
    points, strides = anchor_points([(2, 3), (1, 1)], (8, 16))
    expected = [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8]]
    assert points.tolist() == expected
    assert strides.tolist() == [8] * 6 + [16]


def test_anchor_points_rejects_mismatched_levels():
    with pytest.raises(ValueError, match="2 feature sizes but 1 strides"):
        anchor_points([(2, 3), (1, 1)], (8,))


def test_flatten_levels_follows_point_order():
    torch.manual_seed(0)
    maps = [torch.randn(2, 3, 2, 3), torch.randn(2, 3, 1, 2)]
    flat = flatten_levels(maps)
    assert flat.shape == (2, 8, 3)
    points, _ = anchor_points([(2, 3), (1, 2)], (8, 16))
    for p, (x, y) in enumerate(points.tolist()):  # the flat index p must be the cell of point p
        level, stride = (0, 8) if p < 6 else (1, 16)
        i, j = int(y // stride), int(x // stride)
        torch.testing.assert_close(flat[:, p], maps[level][:, :, i, j])


# ---- backbone + FPN ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_levels_shapes(name):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        backbone = build_backbone(name, weights=None)
        features = backbone(torch.empty(2, 3, 160, 224))
    assert list(features) == ["0", "1", "2", "p6", "p7"]
    assert [tuple(f.shape) for f in features.values()] == [(2, 256, 20, 28), (2, 256, 10, 14), (2, 256, 5, 7),
                                                           (2, 256, 3, 4), (2, 256, 2, 2)]


def test_fpn_p6_from_p5_output_and_relu_before_p7():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", weights=None, out_channels=64).eval()
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        features = backbone(image)
        extra = backbone.fpn.extra_blocks
        p6 = extra.p6(features["2"])
        p7 = extra.p7(F.relu(p6))
    torch.testing.assert_close(features["p6"], p6)
    torch.testing.assert_close(features["p7"], p7)


def test_frozen_stem_stage1_and_batchnorm():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", weights=None, out_channels=64)
    body = backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules()) == 20  # all of resnet18's
    frozen = {n: p for n, p in body.named_parameters() if n.startswith(("conv1", "bn1", "layer1"))}
    trainable = {n: p for n, p in body.named_parameters() if n.startswith(("layer2", "layer3", "layer4"))}
    assert frozen and all(not p.requires_grad for p in frozen.values())
    assert trainable and all(p.requires_grad for p in trainable.values())
    buffers = {n: b.clone() for n, b in body.named_buffers()}
    backbone.train()
    sum(f.sum() for f in backbone(torch.randn(2, 3, 64, 64)).values()).backward()
    assert all(p.grad is None for p in frozen.values())
    assert all(p.grad is not None for p in trainable.values())
    for name, buffer in body.named_buffers():  # batch statistics never leak into the frozen BN
        torch.testing.assert_close(buffer, buffers[name], rtol=0, atol=0)


@pytest.mark.parametrize("frozen_stages, frozen", [(-1, ()), (0, ("conv1", "bn1")), (2, ("conv1", "bn1", "layer1", "layer2")),
                                                  (4, ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"))])
def test_frozen_stages_freeze_the_stem_and_the_first_stages(frozen_stages, frozen):
    body = build_backbone("resnet10", weights=None, out_channels=32, frozen_stages=frozen_stages).body
    for name, parameter in body.named_parameters():
        assert parameter.requires_grad != name.startswith(frozen), name


@pytest.mark.parametrize("bad", [-2, 5, 1.0, "all"])
def test_bad_frozen_stages_are_named(bad):
    with pytest.raises(ValueError, match="frozen_stages"):
        build_resnet("resnet10", weights=None, frozen_stages=bad)


def test_backbone_loads_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = build_resnet("resnet18", weights=None)
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_resnet("resnet18", weights=str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert not loaded.layer1[0].conv1.weight.requires_grad


def test_backbone_weight_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'"):
        build_resnet("resnet19")
    with pytest.raises(ValueError, match="not weights of resnet18"):
        build_resnet("resnet18", weights="IMAGENET1K_V9")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_resnet("resnet18", weights=str(tmp_path / "missing.pth"))
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"does not match ResNet: missing keys \['bn1.weight'.*'head.weight'"):
        build_resnet("resnet18", weights=str(path))


# ---- head -------------------------------------------------------------------------------------------

def test_head_init():
    torch.manual_seed(0)
    head = FCOSHead(num_classes=5, in_channels=64, refine=True)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 + 4 + 4
    for conv in convs:
        assert abs(conv.weight.std().item() - 0.01) < 0.0015 and abs(conv.weight.mean().item()) < 0.002
    for conv in list(head.cls_tower) + list(head.reg_tower) + [head.objectness, head.reg_offsets]:
        if isinstance(conv, nn.Conv2d):
            assert torch.all(conv.bias == 0)
    assert torch.all(head.cls_logits.bias == -math.log(0.98 / 0.02))
    assert torch.all(head.bbox_pred.bias == 4.0)
    assert torch.all(head.scales == 1.0) and head.scales.shape == (5,)
    norms = [m for m in head.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 8 and all(n.num_groups == 32 and torch.all(n.weight == 1) for n in norms)


def _features(channels=64, batch=2, sizes=((12, 16), (6, 8), (3, 4), (2, 2), (1, 1))):
    return [torch.randn(batch, channels, h, w) for h, w in sizes]


def test_head_outputs_per_level():
    torch.manual_seed(0)
    head = FCOSHead(num_classes=3, in_channels=64)
    with torch.no_grad():
        head.scales.copy_(torch.tensor([1.0, -1.0, 2.0, 0.5, 1.5]))  # a negative scale zeroes its level
    features = _features()
    cls_logits, bbox_preds, objectness = head(features)
    for level, (feature, stride) in enumerate(zip(features, STRIDES)):
        size = feature.shape[-2:]
        assert cls_logits[level].shape == (2, 3, *size)
        assert bbox_preds[level].shape == (2, 4, *size) and bbox_preds[level].dtype == torch.float32
        assert objectness[level].shape == (2, 1, *size)
        reg_feature = head.reg_tower(feature)
        raw = head.bbox_pred(reg_feature)
        torch.testing.assert_close(bbox_preds[level], F.relu(head.scales[level] * raw) * stride)
        torch.testing.assert_close(objectness[level], head.objectness(reg_feature))  # on the reg tower
        torch.testing.assert_close(cls_logits[level], head.cls_logits(head.cls_tower(feature)))
    assert torch.all(bbox_preds[1] == 0)


def test_head_rejects_bad_config_and_inputs():
    with pytest.raises(ValueError, match="multiple of 32"):
        FCOSHead(num_classes=3, in_channels=48)
    with pytest.raises(ValueError, match="5 levels .* got 2 feature maps"):
        FCOSHead(num_classes=3, in_channels=32)(_features(32)[:2])


# ---- box refinement -----------------------------------------------------------------------------

def _refine_with_deform_conv(distances, offsets, stride):
    """Independent reference: the boundary sampling as a depthwise 1x1 deformable conv (weights 1)."""
    n, _, h, w = distances.shape
    ys = (torch.arange(h, dtype=distances.dtype) + 0.5) * stride
    xs = (torch.arange(w, dtype=distances.dtype) + 0.5) * stride
    x, y = xs.view(1, 1, w).expand(n, h, w), ys.view(1, h, 1).expand(n, h, w)
    l, t, r, b = distances.unbind(1)
    boxes = torch.stack([x - l, y - t, x + r, y + b], 1)
    shift = torch.zeros_like(offsets)
    shift[:, 1], shift[:, 2], shift[:, 5], shift[:, 6] = -l / stride, -t / stride, r / stride, b / stride
    sampled = deform_conv2d(boxes, offsets + shift, torch.ones(4, 1, 1, 1, dtype=distances.dtype))
    x1, y1, x2, y2 = sampled.unbind(1)
    return F.relu(torch.stack([x - x1, y - y1, x2 - x, y2 - y], 1))


@pytest.mark.parametrize("stride", [8, 32])
def test_refinement_matches_deform_conv(stride):
    torch.manual_seed(stride)
    distances = torch.rand(2, 4, 5, 7, dtype=torch.float64) * 3 * stride
    offsets = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(refine_distances(distances, offsets, stride),
                               _refine_with_deform_conv(distances, offsets, stride))


def test_refinement_hand_values():
    # every distance is one cell, offsets 0: each side is read from the neighbouring cell's box,
    # so interior points see two cells per side; off-map samples read 0.
    stride = 8
    distances = torch.full((1, 4, 3, 3), float(stride))
    refined = refine_distances(distances, torch.zeros(1, 8, 3, 3), stride)
    assert refined[0, 0, :, 1:].eq(2 * stride).all() and refined[0, 0, :, 0].eq(4).all()  # x - 0 = 4
    assert refined[0, 1, 1:, :].eq(2 * stride).all() and refined[0, 1, 0, :].eq(4).all()
    assert refined[0, 2, :, :2].eq(2 * stride).all() and refined[0, 2, :, 2].eq(0).all()  # relu(0 - x)
    assert refined[0, 3, :2, :].eq(2 * stride).all() and refined[0, 3, 2, :].eq(0).all()


def test_head_with_refinement():
    torch.manual_seed(0)
    head = FCOSHead(num_classes=3, in_channels=32, refine=True)
    with torch.no_grad():
        head.reg_offsets.weight.normal_(std=0.1)
    features = _features(32)
    _, bbox_preds, _ = head(features)
    for level, (feature, stride) in enumerate(zip(features, STRIDES)):
        reg_feature = head.reg_tower(feature)
        raw = F.relu(head.scales[level] * head.bbox_pred(reg_feature)) * stride
        expected = _refine_with_deform_conv(raw, head.reg_offsets(reg_feature), stride)
        torch.testing.assert_close(bbox_preds[level], expected)
    sum(b.sum() for b in bbox_preds).backward()
    assert head.reg_offsets.weight.grad.abs().sum() > 0 and head.scales.grad.abs().sum() > 0
