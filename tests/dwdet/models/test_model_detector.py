"""The detector: input transform, training/eval contract, inference post-processing, overfitting."""
import math

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from dwdet.losses import FCOSLoss
from dwdet.models import DetectionTransform, build_fcos
from dwdet.models.transform import IMAGENET_MEAN, fit_size

STRIDES = (8, 16, 32, 64, 128)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _tiny_model(num_classes=3, loss=None, **kwargs):
    torch.manual_seed(0)
    kwargs = {"min_size": 64, "max_size": 128, **kwargs}
    return build_fcos(num_classes, loss, backbone="resnet18", backbone_weights=None, channels=64, **kwargs)


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


# ---- transform ---------------------------------------------------------------------------------

def test_fit_size_keeps_aspect_ratio():
    assert fit_size((100, 200), 800, 1333) == (667, 1333)  # the long side binds
    assert fit_size((480, 640), 800, 1333) == (800, 1067)  # the short side binds; rounded
    assert fit_size((800, 1333), 800, 1333) == (800, 1333)


def test_transform_train_sizes_eval_size_boxes_and_padding():
    torch.manual_seed(0)
    transform = DetectionTransform(min_size=range(64, 97, 16), max_size=1000, test_min_size=72)
    image = torch.rand(3, 40, 50)
    target = _target([[10, 20, 30, 40]], [1])
    seen = set()
    for _ in range(30):
        batch, (resized,) = transform([image], [dict(target)])
        height, width = batch.image_sizes[0]
        seen.add(height)
        torch.testing.assert_close(resized["boxes"], target["boxes"] * height / 40)
        assert batch.tensors.shape[-2] % 32 == 0 and batch.tensors.shape[-1] % 32 == 0
    assert seen == {64, 80, 96}
    assert target["boxes"].tolist() == [[10, 20, 30, 40]]  # the caller's target is not modified
    transform.eval()
    batch, _ = transform([image])
    assert batch.image_sizes == [(72, 90)] and batch.tensors.shape == (1, 3, 96, 96)


def test_transform_normalises_and_pads_with_zeros():
    transform = DetectionTransform(min_size=40, max_size=100).eval()
    image = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 40, 50).clone()
    image[:, 0, 0] = 1.0
    batch, _ = transform([image])
    assert batch.tensors.shape == (1, 3, 64, 64)
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor((0.229, 0.224, 0.225))
    torch.testing.assert_close(batch.tensors[0, :, 0, 0], expected)
    assert batch.tensors[0, :, 1:, 1:].abs().max() < 1e-6  # mean colour -> 0, padding -> 0


def test_transform_needs_test_size_for_multiscale():
    with pytest.raises(ValueError, match="test_min_size is required"):
        DetectionTransform(min_size=(480, 960), max_size=1333)


# ---- training and eval contract -------------------------------------------------------------------

def test_train_forward_backward_with_an_empty_image():
    model = _tiny_model(loss=FCOSLoss(3), refine=True).train()
    images = [torch.rand(3, 60, 90), torch.rand(3, 80, 64)]
    targets = [_target([[5, 10, 50, 55], [30, 5, 88, 40]], [0, 2]), _target([], [])]
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_ctr"}
    assert all(v.dim() == 0 and torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    for module in (model.head.cls_logits, model.head.bbox_pred, model.head.objectness, model.head.reg_offsets,
                   model.backbone.body.layer2[0].conv1):
        assert module.weight.grad.abs().sum() > 0
    assert model.backbone.body.layer1[0].conv1.weight.grad is None


def test_train_with_only_empty_images():
    model = _tiny_model(loss=FCOSLoss(3)).train()
    losses = model([torch.rand(3, 64, 64)], [_target([], [])])
    assert losses["loss_box"] == 0 and losses["loss_ctr"] == 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert model.head.cls_logits.weight.grad.abs().sum() > 0


def test_eval_output_format_in_input_pixels():
    model = _tiny_model().eval()
    model.score_thresh, model.detections_per_img = 0.0, 7
    sizes = [(50, 100), (90, 40)]
    with torch.no_grad():
        detections = model([torch.rand(3, h, w) for h, w in sizes])
    assert len(detections) == 2
    for (height, width), det in zip(sizes, detections):
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape == (7, 4) and det["labels"].dtype == torch.int64
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
        boxes = det["boxes"]
        assert boxes.min() >= 0 and torch.all(boxes[:, 2] <= width) and torch.all(boxes[:, 3] <= height)


def test_autocast_keeps_head_outputs_and_losses_in_float32():
    model = _tiny_model(loss=FCOSLoss(3), refine=True).train()
    image, target = torch.rand(3, 64, 64), _target([[5, 5, 40, 50]], [1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([image], [target])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval().score_thresh = 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        (det,) = model([image])
    assert det["boxes"].dtype == torch.float32 and len(det["boxes"]) > 0


def test_bad_inputs_raise_clear_errors():
    model = _tiny_model(loss=FCOSLoss(3)).train()
    image = torch.rand(3, 64, 64)
    with pytest.raises(ValueError, match="targets are required"):
        model([image])
    with pytest.raises(ValueError, match=r"images\[0\] must be a \(3, H, W\) tensor"):
        model([torch.rand(64, 64)], [_target([], [])])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must be a float \(G, 4\)"):
        model([image], [{"boxes": torch.zeros(2, 5), "labels": torch.zeros(2, dtype=torch.int64)}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must be an int64"):
        model([image], [{"boxes": torch.zeros(2, 4), "labels": torch.zeros(2, dtype=torch.int32)}])
    with pytest.raises(ValueError, match=r"labels outside \[0, 3\)"):
        model([image], [_target([[1, 1, 5, 5]], [3])])
    with pytest.raises(ValueError, match="x2 < x1"):
        model([image], [_target([[6, 1, 5, 5]], [0])])
    with pytest.raises(ValueError, match="without a loss"):
        _tiny_model().train()([image], [_target([], [])])


# ---- inference post-processing on hand-made predictions ----------------------------------------------

def _maps(sizes, num_classes=3):
    """All scores ~0: cls logits -20, centerness +20 (so a score is sigmoid(cls)), zero distances."""
    cls = [torch.full((1, num_classes, h, w), -20.0) for h, w in sizes]
    dist = [torch.zeros(1, 4, h, w) for h, w in sizes]
    ctr = [torch.full((1, 1, h, w), 20.0) for h, w in sizes]
    return cls, dist, ctr


def _put(maps, level, i, j, label, score, distances):
    cls, dist, _ = maps
    cls[level][0, label, i, j] = _logit(score)
    dist[level][0, :, i, j] = torch.tensor(distances, dtype=torch.float32)


SIZES = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]


def test_postprocess_decodes_and_thresholds():
    model = _tiny_model().eval()
    maps = _maps(SIZES)
    _put(maps, 0, 2, 3, 1, 0.9, [4, 6, 10, 12])  # point (28, 20)
    _put(maps, 1, 1, 1, 2, 0.06, [8, 8, 8, 8])  # point (24, 24): just above 0.05
    _put(maps, 1, 3, 3, 0, 0.04, [8, 8, 8, 8])  # below the threshold
    cls, dist, ctr = maps
    ctr[0][0, 0, 2, 3] = 0.0  # the centerness factor halves this score
    (det,) = model.postprocess(*maps, [(64, 64)])
    torch.testing.assert_close(det["boxes"], torch.tensor([[24.0, 14, 38, 32], [16, 16, 32, 32]]))
    torch.testing.assert_close(det["scores"], torch.tensor([0.45, 0.06]))
    assert det["labels"].tolist() == [1, 2]
    model.score_thresh = 0.1
    (det,) = model.postprocess(*maps, [(64, 64)])
    assert det["labels"].tolist() == [1]


def test_objectness_power_reorders_by_the_class_score_or_the_objectness():
    maps = _maps(SIZES)
    _put(maps, 0, 1, 1, 0, 0.9, [4, 4, 4, 4])  # the surer class, the less sure objectness
    _put(maps, 0, 5, 5, 1, 0.6, [4, 4, 4, 4])
    ctr = maps[2]
    ctr[0][0, 0, 1, 1] = _logit(0.4)
    ctr[0][0, 0, 5, 5] = _logit(0.8)
    expected = {1.0: [(1, 0.6 * 0.8), (0, 0.9 * 0.4)],  # as released
                0.0: [(0, 0.9), (1, 0.6)],  # the class score alone
                2.0: [(1, 0.6 * 0.8 ** 2), (0, 0.9 * 0.4 ** 2)]}
    for power, ranked in expected.items():
        (det,) = _tiny_model(objectness_power=power).eval().postprocess(*maps, [(64, 64)])
        assert det["labels"].tolist() == [label for label, _ in ranked]
        assert det["scores"].tolist() == pytest.approx([score for _, score in ranked])
    # a power given to candidates() overrides the model's own, for this call only
    model = _tiny_model().eval()
    (found,) = model.candidates(*maps, [(64, 64)], objectness_power=0.0)
    assert sorted(found["scores"].tolist()) == pytest.approx([0.6, 0.9])
    assert model.objectness_power == 1.0


def test_postprocess_class_aware_nms():
    model = _tiny_model().eval()
    maps = _maps(SIZES)
    _put(maps, 0, 1, 1, 0, 0.9, [8, 8, 8, 8])  # box (4, 4, 20, 20)
    _put(maps, 0, 1, 2, 0, 0.8, [16, 8, 0, 8])  # the same box, same class: suppressed
    _put(maps, 0, 2, 1, 1, 0.7, [8, 16, 8, 0])  # the same box, another class: kept
    _put(maps, 0, 0, 1, 0, 0.6, [8, 0, 8, 7])  # box (4, 4, 20, 11): IoU 0.4375 < 0.6: kept
    (det,) = model.postprocess(*maps, [(64, 64)])
    assert det["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert det["labels"].tolist() == [0, 1, 0]
    model.nms_thresh = 0.4
    (det,) = model.postprocess(*maps, [(64, 64)])
    assert det["scores"].tolist() == pytest.approx([0.9, 0.7])


def test_postprocess_top_k_per_level_and_per_image():
    model = _tiny_model().eval()
    maps = _maps(SIZES)
    for j, score in enumerate([0.5, 0.9, 0.7]):  # separate boxes on level 0
        _put(maps, 0, 4, 2 * j, 0, score, [4, 4, 4, 4])
    _put(maps, 1, 0, 0, 1, 0.6, [4, 4, 4, 4])
    model.pre_nms_top_n = 2
    (det,) = model.postprocess(*maps, [(64, 64)])
    assert det["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])  # 0.5 lost the level's top-2
    model.detections_per_img = 2
    (det,) = model.postprocess(*maps, [(64, 64)])
    assert det["scores"].tolist() == pytest.approx([0.9, 0.7])


def test_postprocess_clips_to_the_unpadded_image():
    model = _tiny_model().eval()
    maps = _maps(SIZES)
    _put(maps, 0, 6, 6, 0, 0.9, [10, 10, 100, 100])  # point (52, 52)
    (det,) = model.postprocess(*maps, [(60, 56)])
    assert det["boxes"].tolist() == [[42.0, 42.0, 56.0, 60.0]]


class _FixedHead(nn.Module):
    """Stands in for the head: one known detection on level 0 whatever the image."""

    def __init__(self):
        super().__init__()
        self.strides, self.num_classes = STRIDES, 3

    def forward(self, features):
        maps = _maps([f.shape[-2:] for f in features])
        _put(maps, 0, 2, 3, 2, 0.9, [4, 6, 10, 12])  # box (24, 14, 38, 32) in resized pixels
        return maps


def test_known_box_comes_back_in_input_pixels():
    model = _tiny_model().eval()
    model.head = _FixedHead()
    with torch.no_grad():
        (det,) = model([torch.rand(3, 50, 100)])  # resized by 1.28 to 64 x 128
    torch.testing.assert_close(det["boxes"], torch.tensor([[24.0, 14, 38, 32]]) / 1.28)
    assert det["labels"].tolist() == [2]


# ---- overfitting one image ------------------------------------------------------------------------

def test_overfits_one_image_with_fcos_loss():
    torch.manual_seed(0)
    image = torch.rand(3, 64, 64) * 0.2
    image[:, 13:40, 7:33] = torch.tensor([0.9, 0.2, 0.1]).view(3, 1, 1)
    image[:, 33:60, 37:57] = torch.tensor([0.1, 0.3, 0.9]).view(3, 1, 1)
    target = _target([[7, 13, 33, 40], [37, 33, 57, 60]], [0, 1])
    model = _tiny_model(num_classes=2, loss=FCOSLoss(2), min_size=64, max_size=64)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(30):
        loss = sum(model([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        (det,) = model([image])
    for box, label in zip(target["boxes"], target["labels"]):
        best = det["labels"] == label
        assert best.any(), f"no detection of class {label}"
        iou = box_iou(box[None], det["boxes"][best][:1])  # the top-scoring detection of that class
        assert iou.item() > 0.7
