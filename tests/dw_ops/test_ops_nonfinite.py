"""Non-finite inputs behave as docs/semantics.md ("Non-finite inputs") states: NaN propagates to
what it touches and nowhere else, infinite logits saturate like PyTorch's BCE."""
import pytest
import torch
from torch.testing import assert_close

import dw_ops
from dw_ops import reference
from ops_problems import at_pairs, dense_entry_weight, make_logits, make_sampling, random_problem

NAN, INF = float("nan"), float("inf")
DTYPES = [torch.float32, torch.float64]


def neg_loss_and_grads(fused, cls, ctr, index, weight):
    cls, ctr = cls.detach().clone().requires_grad_(), ctr.detach().clone().requires_grad_()
    if fused:
        loss = dw_ops.neg_loss(cls, ctr, index, weight)
    else:
        loss = reference.neg_loss_dense(cls, ctr, dense_entry_weight(cls.shape, index, weight.to(cls.dtype)))
    loss.backward()
    return loss.detach(), cls.grad, ctr.grad


# ---- neg_loss --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["listed_entry", "unlisted_entry", "centerness"])
def test_nan_logit_makes_neg_loss_nan(dtype, where):
    """The loss is NaN; the gradients are NaN at that score's class logit (all C of them for a NaN
    centerness) and at its point's centerness, and the clean run's everywhere else. (The dense
    reference cannot say: PyTorch's BCE rejects a NaN input.)"""
    cls, ctr, index, weight = make_logits(0, dtype=dtype)
    clean = neg_loss_and_grads(True, cls, ctr, index, weight)
    listed = set(index.tolist())
    flat = index[3] if where == "listed_entry" else next(i for i in range(cls.numel()) if i not in listed)
    n, p, k = (int(i) for i in torch.unravel_index(torch.as_tensor(flat), cls.shape))
    if where == "centerness":
        ctr[n, p] = NAN
    else:
        cls[n, p, k] = NAN
    loss, grad_cls, grad_ctr = neg_loss_and_grads(True, cls, ctr, index, weight)
    assert loss.isnan()
    nan_cls = torch.zeros(cls.shape, dtype=torch.bool)
    nan_cls[n, p, slice(None) if where == "centerness" else k] = True
    nan_ctr = torch.zeros(ctr.shape, dtype=torch.bool)
    nan_ctr[n, p] = True
    assert grad_cls[nan_cls].isnan().all() and grad_ctr[n, p].isnan()
    assert_close(grad_cls[~nan_cls], clean[1][~nan_cls])
    assert_close(grad_ctr[~nan_ctr], clean[2][~nan_ctr])


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_logits_saturate_like_bce(dtype):
    """+-inf class and centerness logits, on listed and unlisted entries: s is exactly 0 or 1,
    BCE's log is clamped at -100, so the loss and the gradients stay finite and equal the dense
    (PyTorch BCE) reference."""
    cls, ctr, index, weight = make_logits(1, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    signs = torch.randint(3, cls.shape, generator=gen)  # 0: finite, 1: +inf, 2: -inf
    cls = torch.where(signs == 1, INF, torch.where(signs == 2, -INF, cls))
    ctr_signs = torch.randint(3, ctr.shape, generator=gen)
    ctr = torch.where(ctr_signs == 1, INF, torch.where(ctr_signs == 2, -INF, ctr))
    got = neg_loss_and_grads(True, cls, ctr, index, weight)
    want = neg_loss_and_grads(False, cls, ctr, index, weight)
    saturated = (signs == 1) & (ctr_signs == 1)[..., None]  # s == 1: a clamped term of 100
    assert saturated.any() and got[0] > 100
    for a, b in zip(got, want):
        assert a.isfinite().all()
        assert_close(a, b)


# ---- candidate_bag_iou -------------------------------------------------------------------------------

def bag_with_grad(pb, distances):
    distances = distances.detach().clone().requires_grad_()
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, distances, pb.gt_boxes)
    bag.giou_loss.sum().backward()
    return bag, distances.grad


def poison_one_distance(pb, value, side):
    """Distances with `value` at one side of a point that sits in several bags; the point's mask."""
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, pb.distances, pb.gt_boxes)
    pair_counts = torch.zeros(pb.distances.shape[:2], dtype=torch.long).index_put_(
        (bag.image_index, bag.point_index), torch.ones_like(bag.point_index), accumulate=True)
    n, p = (int(i) for i in torch.unravel_index(pair_counts.argmax(), pair_counts.shape))
    assert pair_counts[n, p] >= 2
    distances = pb.distances.clone()
    distances[n, p, side] = value
    return distances, (bag.image_index == n) & (bag.point_index == p), (n, p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("side", range(4))
def test_nan_distance_makes_only_its_pairs_nan(dtype, side):
    pb = random_problem(2, num_gts=(8, 5), dtype=dtype)
    clean, clean_grad = bag_with_grad(pb, pb.distances)
    distances, own, (n, p) = poison_one_distance(pb, NAN, side)
    bag, grad = bag_with_grad(pb, distances)
    assert bag.iou[own].isnan().all() and bag.giou_loss[own].isnan().all()
    assert_close(bag.prior, clean.prior)  # the prior does not depend on the distances
    assert_close(bag.iou[~own], clean.iou[~own])
    assert_close(bag.giou_loss[~own], clean.giou_loss[~own])
    others = torch.ones(grad.shape[:2], dtype=torch.bool)
    others[n, p] = False
    assert grad[n, p].isnan().all()
    assert_close(grad[others], clean_grad[others])
    ref = reference.bag_iou_dense(pb.points, pb.strides, distances, pb.gt_boxes)
    assert_close(bag.giou_loss, at_pairs(ref, [r.giou_loss for r in ref]), equal_nan=True)


@pytest.mark.parametrize("side", range(4))
@pytest.mark.parametrize("value", [INF, -INF])
def test_infinite_distance_matches_the_dense_reference(value, side):
    """Not stated in docs/semantics.md; pinned to the dense (mmdet) formulas. An infinite predicted
    box has IoU 0 with every GT; +inf makes the union and the enclosing area infinite, so the GIoU
    loss is (inf - inf) / inf = NaN, as in mmdet; -inf turns the box inside out (loss ~2). Other
    points' pairs and gradients are untouched."""
    pb = random_problem(3, num_gts=(8, 5))
    clean, clean_grad = bag_with_grad(pb, pb.distances)
    distances, own, (n, p) = poison_one_distance(pb, value, side)
    bag, grad = bag_with_grad(pb, distances)
    ref = reference.bag_iou_dense(pb.points, pb.strides, distances, pb.gt_boxes)
    assert (bag.iou[own] == 0).all()
    assert_close(bag.iou, at_pairs(ref, [r.iou for r in ref]))
    assert_close(bag.giou_loss, at_pairs(ref, [r.giou_loss for r in ref]), equal_nan=True)
    assert bag.giou_loss[own].isnan().all() if value > 0 else bag.giou_loss[own].isfinite().all()
    assert_close(bag.giou_loss[~own], clean.giou_loss[~own])
    others = torch.ones(grad.shape[:2], dtype=torch.bool)
    others[n, p] = False
    assert_close(grad[others], clean_grad[others])


def test_nan_distance_reaches_only_its_gts_weights():
    """Downstream, a NaN pair makes the bag reductions of the GTs holding the point (the w_pos
    normaliser, the P_neg range) NaN, and leaves every other GT's weights as in the clean run.
    (The dense reference spreads the NaN further: it sums over all P points with a zero prior
    outside the bag, and 0 * NaN is NaN, so every GT of that image turns NaN.)"""
    pb = random_problem(4, num_gts=(8, 5))
    clean = dw_ops.dual_weights(*weights_inputs(pb))
    distances, own, _ = poison_one_distance(pb, NAN, 0)
    bag, score, labels, num_points, num_classes = weights_inputs(pb._replace(distances=distances))
    weights = dw_ops.dual_weights(bag, score, labels, num_points, num_classes)
    touched = torch.zeros(len(bag.gt_image), dtype=torch.bool).index_fill_(0, bag.gt_index[own], True)
    in_touched_bag = touched[bag.gt_index]
    assert weights.pos_weight[in_touched_bag].isnan().all() and weights.pair_neg_prob[own].isnan().all()
    assert_close(weights.pos_weight[~in_touched_bag], clean.pos_weight[~in_touched_bag])
    assert_close(weights.pair_neg_prob[~in_touched_bag], clean.pair_neg_prob[~in_touched_bag])
    assert not touched.all()


def weights_inputs(pb):
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, pb.distances, pb.gt_boxes)
    score = dw_ops.pair_scores(bag, pb.cls_logits, pb.ctr_logits, pb.labels)
    return bag, score, pb.labels, len(pb.points), pb.num_classes


# ---- boundary_sample -------------------------------------------------------------------------------

def sample_with_grads(boxes, offsets):
    boxes, offsets = boxes.detach().clone().requires_grad_(), offsets.detach().clone().requires_grad_()
    out = dw_ops.boundary_sample(boxes, offsets)
    out.backward(torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view(out.shape))
    return out.detach(), boxes.grad, offsets.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
# (2, 4, 5, 16) with interior samples: the CPU's 8-sample AVX2 steps, then the NaN's group goes
# through the scalar loop.
@pytest.mark.parametrize("shape, margin", [((2, 4, 5, 6), 1.5), ((2, 4, 5, 16), 0.0)], ids=str)
def test_nan_offset_makes_its_sample_nan(dtype, axis, shape, margin):
    """The sample is NaN (it does not vanish to 0 like an off-map point); so are its offset
    gradients, and the NaN reaches the box gradient of its own channel. Every other sample and
    gradient is the clean run's."""
    boxes, offsets = make_sampling(0, shape, dtype, margin=margin)
    n, c, h, w = 1, 2, 3, 4
    clean = sample_with_grads(boxes, offsets)
    offsets[n, 2 * c + axis, h, w] = NAN
    out, grad_boxes, grad_offsets = sample_with_grads(boxes, offsets)
    mask = torch.zeros(out.shape, dtype=torch.bool)
    mask[n, c, h, w] = True
    assert out[n, c, h, w].isnan() and out[~mask].isfinite().all()
    assert_close(out[~mask], clean[0][~mask])
    offset_mask = mask.repeat_interleave(2, dim=1)  # both offsets of the sample
    assert grad_offsets[offset_mask].isnan().all()
    assert_close(grad_offsets[~offset_mask], clean[2][~offset_mask])
    plane = torch.zeros(grad_boxes.shape, dtype=torch.bool)
    plane[n, c] = True
    assert grad_boxes[plane].isnan().any()
    assert_close(grad_boxes[~plane], clean[1][~plane])
