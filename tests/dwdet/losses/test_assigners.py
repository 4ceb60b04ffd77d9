"""ATSS, GFL, VFL and TOOD against their dense oracles (values and gradients, float64), hand-computed
assignments, edge cases (no GT, a GT covering the image, 1000 GTs) and config errors."""
import math
import os
import statistics

import pytest
import torch

from dwdet.config import load_config
from dwdet.engine.builders import build_loss
from dwdet.losses import (LOSSES, ATSSLoss, GFLLoss, PointLoss, TOODLoss, VFLLoss, assign_atss, assign_task_aligned,
                          prepare_batch)
from dwdet.losses.atss import _level_candidates
from dwdet.models.points import anchor_points
from tests.dense_assigners import dense_loss
from tests.paths import ROOT

SIZES = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
STRIDES = (8, 16, 32, 64, 128)
IMAGE = (128.0, 160.0)  # H, W
METHODS = {"atss": ATSSLoss, "gfl": GFLLoss, "vfl": VFLLoss, "tood": TOODLoss, "tood_warmup": TOODLoss}


def random_batch(seed, gts_per_image=(25, 0, 10), num_classes=4, dtype=torch.float64, cover=True):
    g = torch.Generator().manual_seed(seed)
    n = len(gts_per_image)
    cls = [torch.randn(n, num_classes, h, w, generator=g, dtype=dtype) * 2 - 1 for h, w in SIZES]
    ctr = [torch.randn(n, 1, h, w, generator=g, dtype=dtype) for h, w in SIZES]
    # distances around the right scale for each level, so that IoUs spread over (0, 1)
    reg = [torch.rand(n, 4, h, w, generator=g, dtype=dtype) * 3 * s + 0.3 * s for (h, w), s in zip(SIZES, STRIDES)]
    targets = []
    for count in gts_per_image:
        xy = torch.rand(count, 2, generator=g, dtype=dtype) * torch.tensor([140.0, 110.0], dtype=dtype)
        wh = torch.rand(count, 2, generator=g, dtype=dtype) ** 2 * 100 + 3
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([IMAGE[1], IMAGE[0]], dtype=dtype))], 1)
        if count and cover:
            boxes[0] = torch.tensor([0.0, 0.0, IMAGE[1], IMAGE[0]])  # one GT covering the image
        targets.append({"boxes": boxes, "labels": torch.randint(num_classes, (count,), generator=g)})
    return cls, reg, ctr, targets


def on_levels(loss, strides=STRIDES):
    """``loss`` on the prepared batch of per-level inputs, as the detector calls it."""
    return lambda cls, reg, obj, targets: loss(prepare_batch(cls, reg, obj, targets, strides))


def loss_and_grads(fn, cls, reg, ctr, targets):
    fn = on_levels(fn) if isinstance(fn, PointLoss) else fn
    leaves = [x.clone().requires_grad_() for x in cls + reg + ctr]
    k = len(cls)
    out = fn(leaves[:k], leaves[k:2 * k], leaves[2 * k:], targets)
    grads = torch.autograd.grad(sum(out.values()), leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(leaves, grads)]
    return {key: v.detach() for key, v in out.items()}, grads


def build(method, num_classes=4, **kwargs):
    loss = METHODS[method](num_classes, **kwargs)
    if method.startswith("tood"):
        loss.set_epoch(0 if method == "tood_warmup" else 4)
    return loss


def oracle(method, **kwargs):
    name, warmup = ("tood", True) if method == "tood_warmup" else (method, False)
    return lambda c, r, t, tg: dense_loss(name, c, r, t, tg, STRIDES, warmup=warmup, **kwargs)  # noqa: E731


def assert_parity(method, batch, *, positive=True, rtol=1e-6, **kwargs):
    got, got_grads = loss_and_grads(build(method, **kwargs), *batch)
    want, want_grads = loss_and_grads(oracle(method, **kwargs), *batch)
    assert got.keys() == want.keys()
    for key in want:
        if positive:
            assert want[key] > 0, key
        torch.testing.assert_close(got[key], want[key], rtol=rtol, atol=1e-12, msg=key)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-11)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_dense_oracle(method, seed):
    assert_parity(method, random_batch(seed))


def test_tood_topk_and_exponents_reach_the_assignment():
    assert_parity("tood", random_batch(5), topk=4, alpha=0.5, beta=2.0)


@pytest.mark.parametrize("method", ["atss", "gfl", "vfl"])
def test_atss_topk_reaches_the_assignment(method):
    assert_parity(method, random_batch(6), topk=3)


@pytest.mark.parametrize("method", list(METHODS))
def test_one_gt_covering_the_image(method):
    cls, reg, ctr, _ = random_batch(2, (1,))
    targets = [{"boxes": torch.tensor([[0.0, 0.0, IMAGE[1], IMAGE[0]]], dtype=torch.float64),
                "labels": torch.tensor([1])}]
    assert_parity(method, (cls, reg, ctr, targets))


@pytest.mark.parametrize("method", list(METHODS))
def test_no_gt_in_batch_gives_only_negative_classification(method):
    cls, reg, ctr, targets = random_batch(3, (0, 0))
    got, grads = loss_and_grads(build(method), cls, reg, ctr, targets)
    assert got["loss_cls"] > 0
    assert all(float(v) == 0.0 for k, v in got.items() if k != "loss_cls")
    assert all(float(gr.abs().sum()) == 0.0 for gr in grads[len(cls):2 * len(cls)])  # no box gradient
    assert_parity(method, (cls, reg, ctr, targets), positive=False)


@pytest.mark.parametrize("method", list(METHODS))
def test_a_thousand_gts(method):
    # two images of 1000 and 1200 random GTs (duplicates and many points claimed by several GTs)
    cls, reg, ctr, targets = random_batch(4, (1000, 1200), cover=False)
    assert_parity(method, (cls, reg, ctr, targets), rtol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
def test_float32_close_to_float64(method):
    batch64 = random_batch(7)
    batch32 = ([x.float() for x in batch64[0]], [x.float() for x in batch64[1]], [x.float() for x in batch64[2]],
               [{"boxes": t["boxes"].float(), "labels": t["labels"]} for t in batch64[3]])
    want = on_levels(build(method))(*batch64)
    got = on_levels(build(method))(*batch32)
    for key in want:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-4, atol=1e-6, msg=key)


# ---- hand-computed assignments ------------------------------------------------------------------

def one_level(boxes, height=4, width=4, stride=8, distances=None, cls_prob=None, objectness=0.0, labels=None):
    """The prepared batch of one image on one level (points at (j + 0.5) * stride), one class."""
    if distances is None:
        distances = torch.full((1, height * width, 4), 3.0, dtype=torch.float64)
    if cls_prob is None:
        cls_prob = torch.full((height * width,), 0.5, dtype=torch.float64)
    boxes = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    labels = torch.zeros(len(boxes), dtype=torch.int64) if labels is None else labels
    cls = torch.logit(cls_prob).reshape(1, 1, height, width)
    reg = distances[0].T.reshape(1, 4, height, width)
    obj = torch.full((1, 1, height, width), objectness, dtype=torch.float64)
    return prepare_batch([cls], [reg], [obj], [{"boxes": boxes, "labels": labels}], [stride])


def atss_pairs(boxes, **kwargs):
    a = assign_atss(one_level(boxes), **kwargs)
    return sorted(zip(a.bag.gt_index[a.pairs].tolist(), a.bag.point_index[a.pairs].tolist()))


@pytest.mark.parametrize("shape", [(1, 40), (2, 60), (3, 50), (9, 9), (10, 11), (25, 42), (60, 4)])
@pytest.mark.parametrize("k", [1, 4, 9, 13])
def test_atss_candidates_are_the_k_nearest_points_of_the_level(shape, k):
    # the window search against a stable sort of the whole level, ties (centres on points, on
    # midpoints, at the corners of the map) to the lower index
    height, width = shape
    stride = 8
    points, _ = anchor_points([shape], [stride], dtype=torch.float64)
    g = torch.Generator().manual_seed(height * 100 + width)
    extent = torch.tensor([width * stride, height * stride], dtype=torch.float64)
    centres = torch.cat([torch.rand(40, 2, generator=g, dtype=torch.float64) * extent, points[::7], points[::5] + 4,
                         torch.zeros(1, 2, dtype=torch.float64), extent[None]])
    k = min(k, height * width)
    got = _level_candidates(points, height, width, stride, centres, k).sort(dim=1).values
    distance = ((points[None] - centres[:, None]) ** 2).sum(-1)
    want = torch.argsort(distance, dim=1, stable=True)[:, :k].sort(dim=1).values
    assert torch.equal(got, want)


def test_atss_threshold_by_hand():
    # A 64 x 64 GT centred on the point (12, 12) of a 4 x 4 grid of stride 8; priors are 64 x 64
    # squares. The 9 nearest points are the 3 x 3 block around it: the centre prior has IoU 1, the
    # 4 edge neighbours (shifted 8 px) 56*64 / (2*4096 - 56*64) = 7/9, the 4 corners
    # 56*56 / (2*4096 - 56*56) = 49/79. mean = (1 + 4*7/9 + 4*49/79) / 9 = 0.73246,
    # unbiased std = 0.12755, threshold 0.86001: only the centre point (index 5) is positive.
    ious = [1.0] + [7 / 9] * 4 + [49 / 79] * 4
    assert statistics.mean(ious) == pytest.approx(0.73246, abs=1e-5)
    assert statistics.stdev(ious) == pytest.approx(0.12755, abs=1e-5)
    assert atss_pairs([-20.0, -20.0, 44.0, 44.0]) == [(0, 5)]
    # with only the 3 nearest (centre and two edge points, ties to the lower index: points 1 and 4)
    # the IoUs are 1, 7/9, 7/9: threshold 0.85185 + 0.12830 = 0.98015, again only the centre
    assert statistics.mean([1, 7 / 9, 7 / 9]) + statistics.stdev([1, 7 / 9, 7 / 9]) == pytest.approx(0.98015, abs=1e-5)
    assert atss_pairs([-20.0, -20.0, 44.0, 44.0], topk=3) == [(0, 5)]


def test_atss_equal_ious_pass_the_threshold_but_the_centre_must_be_inside():
    # A 24 x 4 GT centred on (12, 12): every 64 x 64 prior of the 3 x 3 block holds it, so all nine
    # IoUs are 96 / 4096, std 0 and the threshold equals them; only the row y = 12 lies inside.
    assert atss_pairs([0.0, 10.0, 24.0, 14.0]) == [(0, 4), (0, 5), (0, 6)]


def test_atss_point_claimed_by_two_gts_goes_to_the_higher_prior_iou():
    # both GTs above claim point 5: the 64 x 64 one (IoU 1) beats the thin one (IoU 96/4096)
    assert atss_pairs([[0.0, 10.0, 24.0, 14.0], [-20.0, -20.0, 44.0, 44.0]]) == [(0, 4), (0, 6), (1, 5)]


def test_task_aligned_topk_by_hand():
    # GT [0, 0, 16, 16] over a 2 x 2 grid of stride 8; the predicted boxes give IoUs 1, 0.75, 0.5, 1
    # and the joint scores are 0.1, 0.45, 0.4, 0.3 (objectness logit 0: sigmoid 0.5).
    distances = torch.tensor([[[4.0, 4, 12, 12], [8, 4, 4, 12], [4, 4, 12, 4], [12, 12, 4, 4]]], dtype=torch.float64)
    cls_prob = torch.tensor([0.2, 0.9, 0.8, 0.6], dtype=torch.float64)

    def assign(**options):
        a = assign_task_aligned(one_level([0.0, 0.0, 16.0, 16.0], 2, 2, 8, distances, cls_prob), **options)
        return a, a.bag.point_index[a.pairs].tolist()

    top2, points = assign(topk=2)
    torch.testing.assert_close(top2.bag.iou, torch.tensor([1.0, 0.75, 0.5, 1.0], dtype=torch.float64))
    # t = s * IoU^6 = 0.1, 0.45 * 0.75^6 = 0.080090, 0.4 / 64 = 0.00625, 0.3
    assert points == [0, 3]
    # normalised: t / (max t + 1e-7) * max IoU, max t = 0.3 and max IoU = 1 over the two positives
    torch.testing.assert_close(top2.target, torch.tensor([0.1, 0.3], dtype=torch.float64) / (0.3 + 1e-7))
    assert assign(topk=3)[1] == [0, 1, 3]
    # with beta = 1 the ranking follows s * IoU: 0.1, 0.3375, 0.2, 0.3 -> points 1 and 3
    top2_b1, points = assign(topk=2, beta=1.0)
    assert points == [1, 3]
    torch.testing.assert_close(top2_b1.target, torch.tensor([0.3375, 0.3], dtype=torch.float64) / (0.3375 + 1e-7))
    # positives have weight 1 and leave the negative term: their (point, class) entries weigh 0 there
    assert top2.w_pos.tolist() == [1.0, 1.0] and top2.neg_index.tolist() == [0, 3] and top2.w_neg.tolist() == [0, 0]


def test_task_aligned_point_of_two_gts_goes_to_the_higher_iou():
    # the same four points inside two identical-class GTs, all scoring the same; point 3's box is GT 1 exactly
    distances = torch.tensor([[[4.0, 4, 12, 12], [8, 4, 4, 12], [4, 4, 12, 4], [8, 8, 8, 8]]], dtype=torch.float64)
    batch = one_level([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 20.0, 20.0]], 2, 2, 8, distances)
    result = assign_task_aligned(batch, topk=4)
    bag = result.bag
    owner = dict(zip(bag.point_index[result.pairs].tolist(), bag.gt_index[result.pairs].tolist()))
    iou = {(g, p): v for g, p, v in zip(bag.gt_index.tolist(), bag.point_index.tolist(), bag.iou.tolist())}
    for point, gt in owner.items():
        other = 1 - gt
        assert iou[(gt, point)] >= iou.get((other, point), -1.0)
    assert owner[3] == 1 and owner[0] == 0


# ---- configuration ------------------------------------------------------------------------------

def test_every_loss_type_builds_from_its_config():
    for kind in ("atss", "gfl", "vfl", "tood"):
        for path in (f"configs/lab/compare_{kind}_r18_synthetic.py", f"configs/{kind}_r50_fpn_1x_coco.py"):
            cfg = load_config(os.path.join(ROOT, path), ["model.num_classes=80"])  # COCO: from the annotations otherwise
            assert cfg.loss.type == kind
            assert isinstance(build_loss(cfg), LOSSES[kind])


def test_bad_config_values_name_the_key():
    path = os.path.join(ROOT, "configs/lab/compare_atss_r18_synthetic.py")
    with pytest.raises(ValueError, match=r"config key loss\.type must be one of .*'atss'.*got 'atsss'"):
        build_loss(load_config(path, ["loss.type=atsss"]))
    with pytest.raises(ValueError, match=r"config key loss \(type 'atss'\): topk must be an integer >= 1, got 0"):
        build_loss(load_config(path, ["loss.topk=0"]))
    tood = os.path.join(ROOT, "configs/lab/compare_tood_r18_synthetic.py")
    with pytest.raises(ValueError, match=r"config key loss \(type 'tood'\): warmup_epochs must be an integer >= 0"):
        build_loss(load_config(tood, ["loss.warmup_epochs=-1"]))
    for bad in (1.5, True):  # a bool is an int to Python, not a count of epochs
        with pytest.raises(ValueError, match="warmup_epochs must be an integer >= 0"):
            TOODLoss(4, warmup_epochs=bad)
    with pytest.raises(ValueError, match=r"beta must be > 0, got 0"):
        GFLLoss(4, beta=0.0)


def test_bad_inputs_name_the_problem():
    cls, reg, ctr, targets = random_batch(0)
    with pytest.raises(ValueError, match=r"expected 5 levels \(strides \(8, 16, 32, 64, 128\)\)"):
        on_levels(ATSSLoss(4))(cls[:4], reg, ctr, targets)
    with pytest.raises(ValueError, match="GFLLoss: the batch has 4 classes, the loss was built for 3"):
        on_levels(GFLLoss(3))(cls, reg, ctr, targets)
    bad = [dict(t) for t in targets]
    bad[0]["labels"] = bad[0]["labels"] + 10
    with pytest.raises(ValueError, match=r"targets contain labels outside \[0, 4\) \(labels are 0-based class ids\)"):
        on_levels(TOODLoss(4))(cls, reg, ctr, bad)
    bad = [dict(t) for t in targets]
    bad[0]["boxes"] = bad[0]["boxes"][:, [2, 1, 0, 3]]
    with pytest.raises(ValueError, match="targets contain boxes with x2 < x1 or y2 < y1"):
        on_levels(TOODLoss(4))(cls, reg, ctr, bad)
    with pytest.raises(ValueError, match="got 3 images but 2 targets"):
        on_levels(VFLLoss(4))(cls, reg, ctr, targets[:2])


def test_tood_warmup_follows_the_epoch():
    loss = TOODLoss(4, warmup_epochs=2)
    assert not loss.warming_up  # never told the epoch: a trained model
    loss.set_epoch(1)
    assert loss.warming_up
    loss.set_epoch(2)
    assert not loss.warming_up
    assert math.isfinite(float(sum(on_levels(loss)(*random_batch(1)).values())))
