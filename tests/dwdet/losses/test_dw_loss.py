"""DWLoss against the dense oracle (values and gradients, float64) and a hand-computed example."""
import math

import pytest
import torch
from torchvision.ops import box_iou

import dw_ops
from dwdet.losses import DWLoss, FCOSLoss, prepare_batch
from dwdet.models.points import anchor_points
from tests.dense_dw import dense_dw_loss

SIZES = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
STRIDES = (8, 16, 32, 64, 128)


def random_batch(seed, num_classes=4, gts_per_image=(30, 0, 12), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    n = len(gts_per_image)
    cls = [torch.randn(n, num_classes, h, w, generator=g, dtype=dtype) * 2 - 2 for h, w in SIZES]
    ctr = [torch.randn(n, 1, h, w, generator=g, dtype=dtype) for h, w in SIZES]
    reg = [(torch.rand(n, 4, h, w, generator=g, dtype=dtype) * 60 + 0.5) for h, w in SIZES]
    targets = []
    for count in gts_per_image:
        xy = torch.rand(count, 2, generator=g, dtype=dtype) * torch.tensor([140.0, 110.0], dtype=dtype)
        wh = torch.rand(count, 2, generator=g, dtype=dtype) ** 2 * 120 + 2
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([160.0, 128.0], dtype=dtype))], 1)
        if count:
            boxes[0] = torch.tensor([0.0, 0.0, 160.0, 128.0])  # one GT covering the image
        labels = torch.randint(num_classes, (count,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
    return cls, reg, ctr, targets


def dw(strides=STRIDES, **options):
    """DWLoss(**options) on the prepared batch of per-level inputs, as the detector calls it."""
    loss = DWLoss(**options)
    return lambda cls, reg, obj, targets: loss(prepare_batch(cls, reg, obj, targets, strides))


def _loss_and_grads(fn, cls, reg, ctr, targets):
    leaves = [x.clone().requires_grad_() for x in cls + reg + ctr]
    k = len(cls)
    out = fn(leaves[:k], leaves[k:2 * k], leaves[2 * k:], targets)
    total = sum(out.values())
    grads = torch.autograd.grad(total, leaves)
    return {key: v.detach() for key, v in out.items()}, grads


@pytest.mark.parametrize("variant", ["released", "paper"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_oracle(variant, seed):
    cls, reg, ctr, targets = random_batch(seed)
    loss = dw(num_classes=4, variant=variant)
    got, got_grads = _loss_and_grads(loss, cls, reg, ctr, targets)
    oracle = lambda c, r, t, tg: dense_dw_loss(c, r, t, tg, STRIDES, variant=variant)  # noqa: E731
    want, want_grads = _loss_and_grads(oracle, cls, reg, ctr, targets)
    assert got.keys() == want.keys()
    for key in want:
        assert want[key] > 0
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=0, msg=key)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-12)


def test_float32_close_to_float64():
    cls, reg, ctr, targets = random_batch(3)
    loss = dw(num_classes=4)
    want = loss(cls, reg, ctr, targets)
    got = loss([x.float() for x in cls], [x.float() for x in reg], [x.float() for x in ctr], targets)
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-4, atol=1e-7)


def test_no_gt_in_batch_gives_only_negative_term():
    cls, reg, ctr, targets = random_batch(4, gts_per_image=(0, 0))
    out = dw(num_classes=4)(cls, reg, ctr, targets)
    assert out["loss_cls_pos"] == 0 and out["loss_loc"] == 0
    # P_neg is all ones: the negative term is the plain sum of s^2 BCE(s, 0) (normaliser clamped to 1).
    s = torch.cat([c.sigmoid().flatten(2) * t.sigmoid().flatten(2) for c, t in zip(cls, ctr)], 2)
    want = (s ** 2 * -torch.log1p(-s)).sum()
    torch.testing.assert_close(out["loss_cls_neg"], want)


def _hand_example(variant):
    """Three points (stride 8, centers (4, 4), (12, 4), (20, 4)), one GT (1, 1, 23, 7) of class 1 of 2.

    Their IoUs (0.95, 0.80, 0.27) cover every regime of both P_neg formulas."""
    gt = (1.0, 1.0, 23.0, 7.0)
    points = [(4.0, 4.0), (12.0, 4.0), (20.0, 4.0)]
    dists = [(3.0, 3.0, 18.0, 3.0), (11.0, 3.0, 10.0, 2.0), (4.0, 3.0, 2.0, 3.0)]
    cls = [(-1.0, 0.5), (0.3, -0.2), (0.1, 1.5)]
    ctr = [0.2, -0.4, 0.7]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731

    def iou_giou(p):
        area_p = (p[2] - p[0]) * (p[3] - p[1])
        area_g = (gt[2] - gt[0]) * (gt[3] - gt[1])
        ov = max(min(p[2], gt[2]) - max(p[0], gt[0]), 0) * max(min(p[3], gt[3]) - max(p[1], gt[1]), 0)
        union = area_p + area_g - ov
        enc = (max(p[2], gt[2]) - min(p[0], gt[0])) * (max(p[3], gt[3]) - min(p[1], gt[1]))
        return ov / union, ov / union - (enc - union) / enc

    cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
    rows = []
    for (x, y), (l, t, r, b), c, o in zip(points, dists, cls, ctr):
        iou, giou = iou_giou((x - l, y - t, x + r, y + b))
        prior = math.exp(-((x - cx) / 8) ** 2 / (2 * 1.11 ** 2)) * math.exp(-((y - cy) / 8) ** 2 / (2 * 1.11 ** 2))
        s = [sig(v) * sig(o) for v in c]
        rows.append(dict(iou=iou, L=1 - giou, prior=prior, s=s))
    if variant == "released":
        ts = [r["s"][1] * math.exp(-5 * r["L"]) for r in rows]
        den = sum(math.exp(3 * t) * t * r["prior"] for t, r in zip(ts, rows))
        ws = [math.exp(5 * t) * t * r["prior"] / den for t, r in zip(ts, rows)]
        trs = [(1 - r["iou"] ** 2) / 0.75 for r in rows]
        t1, t2 = min(trs), min(1.0, max(trs))
        pneg = [1.0 if r["iou"] < 0.5 else (tr - t1 + 1e-12) / (t2 - t1 + 1e-12) for tr, r in zip(trs, rows)]
        pos_cls = 0.25 * sum(w * -math.log(r["s"][1]) for w, r in zip(ws, rows))
        pos_loc = 0.25 * sum(w * 5 * r["L"] for w, r in zip(ws, rows))
        base = 1.0
    else:
        ts = [r["s"][1] * r["iou"] ** 5 for r in rows]
        den = sum(math.exp(5 * t) * t * r["prior"] for t, r in zip(ts, rows))
        ws = [math.exp(5 * t) * t * r["prior"] / den for t, r in zip(ts, rows)]
        k = 1 / (0.95 ** 2 - 0.5 ** 2)
        pneg = [1.0 if r["iou"] < 0.5 else (0.0 if r["iou"] > 0.95 else -k * r["iou"] ** 2 + 1 + k * 0.25)
                for r in rows]
        pos_cls = sum(w * -math.log(r["s"][1]) for w, r in zip(ws, rows))
        pos_loc = 5 * sum(w * r["L"] for w, r in zip(ws, rows))
        base = 0.75
    neg = 0.0
    for r, pn in zip(rows, pneg):
        for k_, s in enumerate(r["s"]):
            weight = pn if k_ == 1 else base
            neg += weight * s ** 2 * -math.log(1 - s)
    neg_norm = max(sum(1 - pn for pn in pneg), 1.0)
    inputs = (
        [torch.tensor(cls, dtype=torch.float64).T.reshape(1, 2, 1, 3)],
        [torch.tensor(dists, dtype=torch.float64).T.reshape(1, 4, 1, 3)],
        [torch.tensor(ctr, dtype=torch.float64).reshape(1, 1, 1, 3)],
        [{"boxes": torch.tensor([gt], dtype=torch.float64), "labels": torch.tensor([1])}],
    )
    return inputs, {"loss_cls_pos": pos_cls, "loss_loc": pos_loc, "loss_cls_neg": neg / neg_norm}, rows


@pytest.mark.parametrize("variant", ["released", "paper"])
def test_hand_computed_two_points_one_gt(variant):
    inputs, want, rows = _hand_example(variant)
    assert [round(r["iou"], 2) for r in rows] == [0.95, 0.8, 0.27]
    got = dw(strides=(8,), num_classes=2, variant=variant)(*inputs)
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-9), key


@pytest.mark.parametrize("variant", ["released", "paper"])
def test_iou_target_pulls_each_positive_score_towards_its_iou(variant):
    """pos_cls_target="iou": BCE(s, IoU) in place of BCE(s, 1), with the same weights; the other terms
    unchanged."""
    inputs, want, rows = _hand_example(variant)
    one = dw(strides=(8,), num_classes=2, variant=variant)(*inputs)
    got = dw(strides=(8,), num_classes=2, variant=variant, pos_cls_target="iou")(*inputs)
    # the hand example's positive weights, recovered from its BCE(s, 1) term per point
    factor = 0.25 if variant == "released" else 1.0
    if variant == "released":
        ts = [r["s"][1] * math.exp(-5 * r["L"]) for r in rows]
        den = sum(math.exp(3 * t) * t * r["prior"] for t, r in zip(ts, rows))
    else:
        ts = [r["s"][1] * r["iou"] ** 5 for r in rows]
        den = sum(math.exp(5 * t) * t * r["prior"] for t, r in zip(ts, rows))
    ws = [math.exp(5 * t) * t * r["prior"] / den for t, r in zip(ts, rows)]
    bce = lambda s, q: -(q * math.log(s) + (1 - q) * math.log(1 - s))  # noqa: E731
    expected = factor * sum(w * bce(r["s"][1], r["iou"]) for w, r in zip(ws, rows))
    assert got["loss_cls_pos"].item() == pytest.approx(expected, rel=1e-9)
    assert one["loss_cls_pos"].item() == pytest.approx(want["loss_cls_pos"], rel=1e-9)
    assert got["loss_loc"] == one["loss_loc"] and got["loss_cls_neg"] == one["loss_cls_neg"]
    with pytest.raises(ValueError, match="pos_cls_target must be one of"):
        DWLoss(num_classes=2, pos_cls_target="giou")


@pytest.mark.parametrize("variant", ["released", "paper"])
def test_centerness_objectness_target_adds_fcos_centerness_bce_on_the_bag(variant):
    """objectness_target="centerness": the other terms as released, plus the mean over the bag's
    pairs of BCE(sigmoid(objectness), centerness of the point in its GT)."""
    inputs, want, _ = _hand_example(variant)
    got = dw(strides=(8,), num_classes=2, variant=variant, objectness_target="centerness")(*inputs)
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-9), key
    # the points (4, 4), (12, 4), (20, 4) in the GT (1, 1, 23, 7): left/right 3/19, 11/11, 19/3, top/bottom 3/3
    centerness = [math.sqrt(3 / 19), 1.0, math.sqrt(3 / 19)]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    bce = lambda p, q: -(q * math.log(p) + (1 - q) * math.log(1 - p))  # noqa: E731
    expected = sum(bce(sig(o), c) for o, c in zip([0.2, -0.4, 0.7], centerness)) / 3
    assert got["loss_ctr"].item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="objectness_target must be one of"):
        DWLoss(num_classes=2, objectness_target="giou")


@pytest.mark.parametrize("variant", ["released", "paper"])
def test_iou_objectness_target_adds_bce_towards_each_bag_boxs_iou(variant):
    """objectness_target="iou": the other terms as released, plus the mean over the bag's pairs of
    BCE(sigmoid(objectness), IoU of the pair's predicted box with its GT)."""
    inputs, want, rows = _hand_example(variant)
    got = dw(strides=(8,), num_classes=2, variant=variant, objectness_target="iou")(*inputs)
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-9), key
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    bce = lambda p, q: -(q * math.log(p) + (1 - q) * math.log(1 - p))  # noqa: E731
    expected = sum(bce(sig(o), r["iou"]) for o, r in zip([0.2, -0.4, 0.7], rows)) / 3
    assert got["loss_obj_iou"].item() == pytest.approx(expected, rel=1e-9)
    assert "loss_ctr" not in got


def test_iou_objectness_target_trains_the_objectness_only():
    """The IoU is a target, not a path: the term's gradient reaches the objectness logits and not the
    box regression that made the IoU."""
    cls, reg, ctr, targets = random_batch(5)
    leaves = [x.clone().requires_grad_() for x in cls + reg + ctr]
    k = len(cls)
    loss = DWLoss(num_classes=4, objectness_target="iou")
    batch, bag = _batch_and_bag(leaves[:k], leaves[k:2 * k], leaves[2 * k:], targets)
    out = loss._objectness_term(batch, bag)
    grads = torch.autograd.grad(out, leaves, allow_unused=True)
    assert all(g is None or not g.any() for g in grads[:2 * k]) and any(g is not None and g.any() for g in grads[2 * k:])
    # the value against IoUs computed apart (torchvision), from each pair's decoded box
    (x, y), d = batch.points[bag.point_index].unbind(1), batch.dist[bag.image_index, bag.point_index].detach()
    boxes = torch.stack([x - d[:, 0], y - d[:, 1], x + d[:, 2], y + d[:, 3]], 1)
    iou = box_iou(boxes, batch.gt_boxes[bag.gt_index]).diagonal()
    logits = batch.objectness[bag.image_index, bag.point_index].detach()
    assert len(iou) > 100
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, iou)
    assert out.item() == pytest.approx(expected.item(), rel=1e-9)


def test_centerness_objectness_target_on_a_batch_against_a_dense_computation():
    """Every (point inside a GT, GT) pair of every level and image, centerness from the box sides;
    the term's gradient reaches the objectness logits only."""
    cls, reg, ctr, targets = random_batch(3)
    got = dw(num_classes=4, objectness_target="centerness")(cls, reg, ctr, targets)
    released = dw(num_classes=4)(cls, reg, ctr, targets)
    assert all(torch.equal(got[key], released[key]) for key in released)
    total, pairs = 0.0, 0
    for image, target in enumerate(targets):
        for level, ((h, w), stride) in enumerate(zip(SIZES, STRIDES)):
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                    indexing="ij")
            x, y = (xs.flatten() + 0.5) * stride, (ys.flatten() + 0.5) * stride
            logit = ctr[level][image, 0].flatten()
            for box in target["boxes"]:
                l, t, r, b = x - box[0], y - box[1], box[2] - x, box[3] - y
                inside = (l > 0) & (t > 0) & (r > 0) & (b > 0)
                c = (torch.minimum(l, r) / torch.maximum(l, r) * torch.minimum(t, b) / torch.maximum(t, b)).sqrt()
                total += torch.nn.functional.binary_cross_entropy_with_logits(
                    logit[inside], c[inside], reduction="sum").item()
                pairs += int(inside.sum())
    assert pairs > 100
    assert got["loss_ctr"].item() == pytest.approx(total / pairs, rel=1e-9)
    leaves = [x.clone().requires_grad_() for x in cls + reg + ctr]
    k = len(cls)
    out = DWLoss(num_classes=4, objectness_target="centerness")._objectness_term(
        *_batch_and_bag(leaves[:k], leaves[k:2 * k], leaves[2 * k:], targets))
    grads = torch.autograd.grad(out, leaves, allow_unused=True)
    assert all(g is None or not g.any() for g in grads[:2 * k]) and any(g is not None and g.any() for g in grads[2 * k:])


def test_bag_on_fcos_ranges_keeps_the_pairs_whose_reach_fits_their_level():
    """bag_levels="fcos_ranges": the released bag's pairs whose largest distance to the GT's sides
    lies in FCOS's range of their level, priors and IoUs as they were; the loss changes with them."""
    cls, reg, ctr, targets = random_batch(4)
    batch = prepare_batch(cls, reg, ctr, targets, STRIDES)
    full = DWLoss(num_classes=4).assign(batch).bag
    kept = DWLoss(num_classes=4, bag_levels="fcos_ranges").assign(batch).bag
    ranges = {8: (-1, 64), 16: (64, 128), 32: (128, 256), 64: (256, 512), 128: (512, math.inf)}
    expected = []
    for k in range(len(full.gt_index)):
        (x, y), box = batch.points[full.point_index[k]].tolist(), batch.gt_boxes[full.gt_index[k]].tolist()
        reach = max(x - box[0], y - box[1], box[2] - x, box[3] - y)
        low, high = ranges[int(batch.strides[full.point_index[k]])]
        if low <= reach <= high:
            expected.append(k)
    assert 0 < len(expected) < len(full.gt_index)
    index = torch.tensor(expected)
    for name in ("gt_index", "point_index", "image_index", "prior", "iou", "giou_loss"):
        assert torch.equal(getattr(kept, name), getattr(full, name)[index]), name
    counts = torch.bincount(kept.gt_index, minlength=len(batch.gt_boxes))
    assert torch.equal(kept.gt_offsets, torch.cat([counts.new_zeros(1), counts.cumsum(0)]))
    released = dw(num_classes=4)(cls, reg, ctr, targets)
    ranged = dw(num_classes=4, bag_levels="fcos_ranges")(cls, reg, ctr, targets)
    assert ranged.keys() == released.keys() and ranged["loss_cls_pos"] != released["loss_cls_pos"]
    with pytest.raises(ValueError, match="bag_levels must be one of"):
        DWLoss(num_classes=2, bag_levels="p3")
    with pytest.raises(ValueError, match="got 5 regress_ranges for 1 levels"):
        dw(strides=(8,), num_classes=2, bag_levels="fcos_ranges")(*_hand_example("released")[0])


def _batch_and_bag(cls, reg, ctr, targets):
    batch = prepare_batch(cls, reg, ctr, targets, STRIDES)
    return batch, DWLoss(num_classes=4).assign(batch).bag


@pytest.mark.parametrize("weighting", ["pneg", "ineg", "one_minus_wpos", "none"])
def test_neg_weighting_ablations(weighting):
    """Table 5's variants change only the weights of the bag entries (class 1 at every point)."""
    inputs, _, _ = _hand_example("released")
    full = dw(strides=(8,), num_classes=2)(*inputs)
    out = dw(strides=(8,), num_classes=2, neg_weighting=weighting)(*inputs)
    assert out["loss_cls_pos"] == full["loss_cls_pos"] and out["loss_loc"] == full["loss_loc"]
    cls, reg, ctr, targets = inputs
    s = (cls[0].sigmoid() * ctr[0].sigmoid()).reshape(2, 3).T  # (point, class)
    bce = -torch.log1p(-s)
    pts, strs = anchor_points([(1, 3)], (8,), dtype=torch.float64)
    bag = dw_ops.candidate_bag_iou(pts, strs, reg[0].flatten(2).transpose(1, 2), [targets[0]["boxes"]])
    weights = dw_ops.dual_weights(bag, s[bag.point_index, 1], torch.tensor([1]), 2, 2)
    assert bag.point_index.tolist() == [0, 1, 2]
    pneg = weights.pair_neg_prob
    bag_weight = {"pneg": pneg, "ineg": s[:, 1] ** 2, "one_minus_wpos": (1 - weights.pos_weight).clamp(min=0),
                  "none": torch.zeros(3, dtype=torch.float64)}[weighting]
    want = ((s[:, 0] ** 2 * bce[:, 0]).sum() + (bag_weight * bce[:, 1]).sum()) / (1 - pneg).sum().clamp(min=1)
    torch.testing.assert_close(out["loss_cls_neg"], want)


def test_center_prior_variants_select_nearest_points():
    cls, reg, ctr, targets = random_batch(5)
    for prior in ("hard", "threshold", "topk"):
        out = dw(num_classes=4, center_prior=prior)(cls, reg, ctr, targets)
        assert all(torch.isfinite(v) for v in out.values()), prior
    # top-k with a huge k keeps the whole bag, so it equals the threshold bag with a huge radius.
    a = dw(num_classes=4, center_prior="topk", prior_topk=10 ** 6)(cls, reg, ctr, targets)
    b = dw(num_classes=4, center_prior="threshold", prior_threshold=1e9)(cls, reg, ctr, targets)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_bad_inputs_name_the_problem():
    cls, reg, ctr, targets = random_batch(6)
    with pytest.raises(ValueError, match="labels"):
        bad = [dict(t, labels=t["labels"] + 10) for t in targets]
        dw(num_classes=4)(cls, reg, ctr, bad)
    with pytest.raises(ValueError, match="targets"):
        dw(num_classes=4)(cls, reg, ctr, targets[:1])
    with pytest.raises(ValueError, match="classes"):
        dw(num_classes=5)(cls, reg, ctr, targets)
    with pytest.raises(ValueError, match="neg_weighting"):
        DWLoss(num_classes=4, neg_weighting="bogus")


def test_neg_scale_multiplies_the_negative_term_only():
    cls, reg, ctr, targets = random_batch(7)
    base, base_grads = _loss_and_grads(dw(num_classes=4), cls, reg, ctr, targets)
    leaves = [x.clone().requires_grad_() for x in cls + reg + ctr]
    k = len(cls)
    neg = dw(num_classes=4)(leaves[:k], leaves[k:2 * k], leaves[2 * k:], targets)["loss_cls_neg"]
    neg_grads = [torch.zeros_like(x) if g is None else g  # the boxes enter P_neg detached
                 for x, g in zip(leaves, torch.autograd.grad(neg, leaves, allow_unused=True))]
    scaled, scaled_grads = _loss_and_grads(dw(num_classes=4, neg_scale=10.0), cls, reg, ctr, targets)
    assert torch.equal(scaled["loss_cls_pos"], base["loss_cls_pos"]) and torch.equal(scaled["loss_loc"], base["loss_loc"])
    torch.testing.assert_close(scaled["loss_cls_neg"], 10 * base["loss_cls_neg"])
    for s, b, n in zip(scaled_grads, base_grads, neg_grads):  # the total's gradient gains 9x the negative's
        torch.testing.assert_close(s, b + 9 * n)
    with pytest.raises(ValueError, match="neg_scale must be > 0, got 0"):
        DWLoss(num_classes=4, neg_scale=0)


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_neg_reference_scores_scale_the_negative_term_by_the_scores_per_object(power):
    cls, reg, ctr, targets = random_batch(8)
    base = _loss_and_grads(dw(num_classes=4), cls, reg, ctr, targets)[0]
    scores = sum(x.numel() for x in cls)  # N * P * C
    per_object = scores / sum(len(t["labels"]) for t in targets)
    for reference in (per_object, 4 * per_object):
        loss = dw(num_classes=4, neg_reference_scores=reference, neg_reference_power=power)
        out = _loss_and_grads(loss, cls, reg, ctr, targets)[0]
        assert torch.equal(out["loss_cls_pos"], base["loss_cls_pos"]) and torch.equal(out["loss_loc"], base["loss_loc"])
        torch.testing.assert_close(out["loss_cls_neg"], (reference / per_object) ** power * base["loss_cls_neg"])
    # a batch without GTs counts as one: its factor is (S_ref / (N P C)) ** power
    empty = [dict(boxes=t["boxes"][:0], labels=t["labels"][:0]) for t in targets]
    released = dw(num_classes=4)(cls, reg, ctr, empty)["loss_cls_neg"]
    loss = dw(num_classes=4, neg_reference_scores=2.0 * scores, neg_reference_power=power)
    torch.testing.assert_close(loss(cls, reg, ctr, empty)["loss_cls_neg"], 2.0 ** power * released)


def test_neg_reference_options_reject_bad_values():
    with pytest.raises(ValueError, match="neg_reference_scores must be > 0 or None, got 0"):
        DWLoss(num_classes=4, neg_reference_scores=0)
    with pytest.raises(ValueError, match="neg_reference_power must be >= 0, got -1"):
        DWLoss(num_classes=4, neg_reference_scores=2.4e5, neg_reference_power=-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_bench_baseline_matches_dense_oracle(seed):
    """dw_ops.reference.dw_loss_dense is the speed and memory baseline of tools/bench_ops.py: it must
    compute the released loss too, or the benchmark would time something else."""
    from dw_ops.reference import dw_loss_dense
    cls, reg, ctr, targets = random_batch(seed)
    got, got_grads = _loss_and_grads(lambda c, r, t, tg: dw_loss_dense(c, r, t, tg, STRIDES), cls, reg, ctr, targets)
    oracle = lambda c, r, t, tg: dense_dw_loss(c, r, t, tg, STRIDES)  # noqa: E731
    want, want_grads = _loss_and_grads(oracle, cls, reg, ctr, targets)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=0, msg=key)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-12)


def test_fcos_warmup_trains_as_fcos_then_as_dw():
    batch = prepare_batch(*random_batch(11), STRIDES)
    warm, plain, fcos = DWLoss(4, fcos_warmup_epochs=2), DWLoss(4), FCOSLoss(4)

    def same(a, b):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    same(warm(batch), plain(batch))  # never told the epoch: a trained model, DW's loss
    warm.set_epoch(1)
    same(warm(batch), fcos(batch))
    a = warm.assign(batch)
    for ours, theirs in zip(warm.classification_weights(batch, a), fcos.classification_weights(batch, a)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    warm.set_epoch(2)
    same(warm(batch), plain(batch))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="fcos_warmup_epochs"):
            DWLoss(4, fcos_warmup_epochs=bad)
