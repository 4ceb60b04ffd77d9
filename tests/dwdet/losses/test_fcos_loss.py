"""FCOS baseline loss: assignment on a hand example, parity with a naive reference, DDP normalisers."""
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dwdet.losses import FCOSLoss, assign_fcos, prepare_batch
from dwdet.losses.fcos import centerness_target, gt_distances
from dwdet.utils.dist import reduce_mean

GT_BOXES = torch.tensor([[0.0, 0, 64, 64], [16, 16, 48, 48], [0, 0, 200, 120]])
GT_LABELS = torch.tensor([0, 1, 2])
HAND_SHAPES, HAND_STRIDES, HAND_RANGES = ((16, 32), (8, 16)), (8, 16), ((-1.0, 64.0), (64.0, 128.0))
# (x, y, stride) of the points the example looks at, and their index in the layout of HAND_SHAPES
HAND_POINTS = [(28, 28, 8), (44, 28, 8), (36, 36, 8), (40, 24, 16), (104, 56, 16), (100, 60, 8)]


def _point_index(x, y, stride):
    level = HAND_STRIDES.index(stride)
    start = sum(h * w for h, w in HAND_SHAPES[:level])
    return start + int(y // stride) * HAND_SHAPES[level][1] + int(x // stride)


def _hand_assignment(boxes, labels, **options):
    """Label and target distances of each of HAND_POINTS (-1: negative) under assign_fcos."""
    maps = [(torch.zeros(1, 3, h, w), torch.ones(1, 4, h, w), torch.zeros(1, 1, h, w)) for h, w in HAND_SHAPES]
    cls, reg, ctr = (list(m) for m in zip(*maps))
    batch = prepare_batch(cls, reg, ctr, [{"boxes": boxes, "labels": labels}], HAND_STRIDES)
    a = assign_fcos(batch, **{"regress_ranges": HAND_RANGES, **options})
    point, gt = a.bag.point_index[a.pairs], a.bag.gt_index[a.pairs]
    found = dict(zip(point.tolist(), zip(batch.labels[gt].tolist(), gt_distances(batch, point, gt).tolist())))
    return [found.get(_point_index(*p), (-1, None)) for p in HAND_POINTS]


def test_assignment_hand_example_with_center_sampling():
    got = _hand_assignment(GT_BOXES, GT_LABELS, center_radius=1.5)
    # (28, 28): inside the center regions of boxes 0 and 1 -> the smaller, 1.
    # (44, 28): inside boxes 0 and 1 but on the edge of their center regions -> negative.
    # (40, 24) at stride 16: in box 0's and 1's center regions, but reaches only 40 < 64 -> negative.
    # (104, 56) at stride 16: box 2 reaches 104 in (64, 128]; (100, 60) at stride 8: 100 > 64 -> negative.
    assert [label for label, _ in got] == [1, -1, 1, -1, 2, -1]
    assert [d for label, d in got if label >= 0] == [[12, 12, 20, 20], [20, 20, 12, 12], [104, 56, 96, 64]]


def test_assignment_without_center_sampling_uses_the_whole_box():
    got = _hand_assignment(GT_BOXES, GT_LABELS, center_radius=None)
    assert [label for label, _ in got] == [1, 1, 1, -1, 2, -1]
    assert got[1][1] == [28, 12, 4, 20]


def test_assignment_without_boxes():
    assert _hand_assignment(GT_BOXES[:0], GT_LABELS[:0]) == [(-1, None)] * 6


def test_assignment_needs_one_regress_range_per_level():
    with pytest.raises(ValueError, match=r"got 1 regress_ranges for 2 levels \(strides \(8, 16\)\)"):
        _hand_assignment(GT_BOXES, GT_LABELS, center_radius=None, regress_ranges=HAND_RANGES[:1])


# ---- parity with a naive reference ------------------------------------------------------------

LEVELS = ((6, 8), (3, 4))
LEVEL_STRIDES = (8, 16)
LEVEL_RANGES = ((-1.0, 32.0), (32.0, math.inf))


def _naive_assign(x, y, stride, low, high, boxes, labels):
    best = None
    for g, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy, radius = (x1 + x2) / 2, (y1 + y2) / 2, 1.5 * stride
        region = (max(cx - radius, x1), max(cy - radius, y1), min(cx + radius, x2), min(cy + radius, y2))
        if min(x - region[0], y - region[1], region[2] - x, region[3] - y) <= 0:
            continue
        sides = (x - x1, y - y1, x2 - x, y2 - y)
        area = (x2 - x1) * (y2 - y1)
        if low <= max(sides) <= high and (best is None or area < best[0]):
            best = (area, int(labels[g]), sides)
    return best


def _naive_loss(cls_logits, bbox_preds, centerness, targets):
    """FCOS loss written point by point from its definition (float64)."""
    focal = giou_sum = ctr_bce = weight_sum = 0.0
    num_pos = 0
    for n, target in enumerate(targets):
        for level, ((h, w), stride, (low, high)) in enumerate(zip(LEVELS, LEVEL_STRIDES, LEVEL_RANGES)):
            for i in range(h):
                for j in range(w):
                    x, y = (j + 0.5) * stride, (i + 0.5) * stride
                    match = _naive_assign(x, y, stride, low, high, target["boxes"], target["labels"])
                    p = cls_logits[level][n, :, i, j].sigmoid()
                    for k in range(p.numel()):
                        if match is not None and match[1] == k:
                            focal -= 0.25 * (1 - p[k]) ** 2 * torch.log(p[k])
                        else:
                            focal -= 0.75 * p[k] ** 2 * torch.log(1 - p[k])
                    if match is None:
                        continue
                    num_pos += 1
                    lt, tt, rt, bt = match[2]
                    lp, tp, rp, bp = bbox_preds[level][n, :, i, j]
                    area_p, area_t = (lp + rp) * (tp + bp), (lt + rt) * (tt + bt)
                    inter = (torch.minimum(lp, torch.tensor(lt)) + torch.minimum(rp, torch.tensor(rt))) * \
                            (torch.minimum(tp, torch.tensor(tt)) + torch.minimum(bp, torch.tensor(bt)))
                    enclose = (max(lp, lt) + max(rp, rt)) * (max(tp, tt) + max(bp, bt))
                    union = area_p + area_t - inter
                    giou = inter / union - (enclose - union) / enclose
                    weight = math.sqrt(min(lt, rt) / max(lt, rt) * min(tt, bt) / max(tt, bt))
                    giou_sum += weight * (1 - giou)
                    weight_sum += weight
                    z = centerness[level][n, 0, i, j]
                    ctr_bce -= weight * torch.log(z.sigmoid()) + (1 - weight) * torch.log(1 - z.sigmoid())
    num_pos = max(num_pos, 1)
    return {"loss_cls": focal / num_pos, "loss_box": giou_sum / max(weight_sum, 1e-6), "loss_ctr": ctr_bce / num_pos}


def _inputs(seed, num_images=2, num_classes=3):
    generator = torch.Generator().manual_seed(seed)
    options = {"generator": generator, "dtype": torch.float64}
    cls_logits = [torch.randn(num_images, num_classes, h, w, **options) for h, w in LEVELS]
    bbox_preds = [torch.rand(num_images, 4, h, w, **options) * 40 + 1 for h, w in LEVELS]
    centerness = [torch.randn(num_images, 1, h, w, **options) for h, w in LEVELS]
    corners = torch.rand(num_images, 3, 2, generator=generator) * torch.tensor([40.0, 30.0])
    sizes = torch.rand(num_images, 3, 2, generator=generator) * torch.tensor([50.0, 40.0]) + 4
    targets = [{"boxes": torch.cat([c, c + s], 1).double(),
                "labels": torch.randint(num_classes, (3,), generator=generator)} for c, s in zip(corners, sizes)]
    return cls_logits, bbox_preds, centerness, targets


def _loss(num_classes=3):
    """FCOSLoss on the prepared batch of per-level inputs, as the detector calls it."""
    loss = FCOSLoss(num_classes, regress_ranges=LEVEL_RANGES)
    return lambda cls, reg, obj, targets: loss(prepare_batch(cls, reg, obj, targets, LEVEL_STRIDES))


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_naive_reference(seed):
    cls_logits, bbox_preds, centerness, targets = _inputs(seed)
    targets[1] = {"boxes": targets[1]["boxes"][:0], "labels": targets[1]["labels"][:0]}  # an empty image
    losses = _loss()(cls_logits, bbox_preds, centerness, targets)
    expected = _naive_loss(cls_logits, bbox_preds, centerness, targets)
    assert expected["loss_box"] > 0  # the example has positives
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], torch.as_tensor(value, dtype=torch.float64), msg=name)


def test_loss_without_any_box_is_background_focal_only():
    cls_logits, bbox_preds, centerness, targets = _inputs(2)
    for t in targets:
        t["boxes"], t["labels"] = t["boxes"][:0], t["labels"][:0]
    for maps in (cls_logits, bbox_preds, centerness):
        for m in maps:
            m.requires_grad_(True)
    losses = _loss()(cls_logits, bbox_preds, centerness, targets)
    p = torch.cat([c.flatten() for c in cls_logits]).sigmoid()
    torch.testing.assert_close(losses["loss_cls"], -(0.75 * p ** 2 * torch.log(1 - p)).sum())
    assert losses["loss_box"] == 0 and losses["loss_ctr"] == 0
    sum(losses.values()).backward()  # still connected to every output (DDP needs all parameters used)
    assert all(m.grad is not None for m in bbox_preds + centerness)


def test_loss_rejects_mismatched_inputs():
    cls_logits, bbox_preds, centerness, targets = _inputs(0)
    with pytest.raises(ValueError, match=r"expected 2 levels \(strides \(8, 16\)\)"):
        _loss()(cls_logits[:1], bbox_preds[:1], centerness[:1], targets)
    with pytest.raises(ValueError, match="FCOSLoss: the batch has 3 classes, the loss was built for 4"):
        _loss(4)(cls_logits, bbox_preds, centerness, targets)
    with pytest.raises(ValueError, match="got 2 images but 1 targets"):
        _loss()(cls_logits, bbox_preds, centerness, targets[:1])


# ---- normalisers over DDP ranks --------------------------------------------------------------------

def _rank_worker(rank, store_path, inputs, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        losses = _loss()(*inputs[rank])
        results.put((rank, {k: v.item() for k, v in losses.items()}, reduce_mean(torch.tensor(rank + 1.0)).item()))
    finally:
        dist.destroy_process_group()


def test_normalisers_are_averaged_over_ranks(tmp_path):
    inputs = [_inputs(3, num_images=1), _inputs(4, num_images=1)]
    context = mp.get_context("fork")  # the children reuse the imported modules: no start-up cost
    results = context.SimpleQueue()
    mp.start_processes(_rank_worker, args=(str(tmp_path / "store"), inputs, results), nprocs=2,
                       start_method="fork")
    by_rank = dict((rank, (losses, mean)) for rank, losses, mean in (results.get() for _ in range(2)))

    # expected: each rank's sums divided by the normalisers averaged over both ranks
    loss = FCOSLoss(3, regress_ranges=LEVEL_RANGES)
    counts, weights, local = [], [], []
    for cls_logits, bbox_preds, centerness, targets in inputs:
        batch = prepare_batch(cls_logits, bbox_preds, centerness, targets, LEVEL_STRIDES)
        a = loss.assign(batch)
        positive = gt_distances(batch, a.bag.point_index[a.pairs], a.bag.gt_index[a.pairs])
        counts.append(len(positive))
        weights.append(centerness_target(positive).sum().item())
        local.append(loss(batch))
    assert counts[0] != counts[1]
    mean_count, mean_weight = max(sum(counts) / 2, 1), max(sum(weights) / 2, 1e-6)
    for rank in range(2):
        losses, mean = by_rank[rank]
        assert mean == 1.5
        count_ratio = max(counts[rank], 1) / mean_count
        assert losses["loss_cls"] == pytest.approx(local[rank]["loss_cls"].item() * count_ratio)
        assert losses["loss_ctr"] == pytest.approx(local[rank]["loss_ctr"].item() * count_ratio)
        assert losses["loss_box"] == pytest.approx(local[rank]["loss_box"].item() * weights[rank] / mean_weight)
