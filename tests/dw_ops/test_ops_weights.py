"""dual_weights (and the whole fused assignment) against the dense reference, and hand examples."""
import math

import pytest
import torch
from torch.testing import assert_close

import dw_ops
from dw_ops import reference
from ops_problems import GT_CASES, at_pairs, dense_entry_weight, fused_assignment, random_problem

MODES = {
    "released": {},
    "released_hard_prior": {"hard_prior": True},
    "paper_pos": {"pos_mode": "paper"},
    "paper_neg": {"neg_mode": "paper", "gamma1": 1.5},
    "paper": {"pos_mode": "paper", "neg_mode": "paper", "beta": 6.0, "mu": 4.0},
    "custom_mu": {"mu": 4.0, "mu_den": 2.0},
}
DUPLICATE_LABELS = [torch.tensor([2, 2, 2])]  # the two identical boxes and the overlapping one share a class


def problem(case, seed=0, dtype=torch.float64):
    labels = DUPLICATE_LABELS if case == "duplicates" else None
    return random_problem(seed, num_gts=(12, 5), dtype=dtype, gt_boxes=GT_CASES[case], gt_labels=labels)


def check_assignment(pb, **kwargs):
    fused = fused_assignment(pb, **kwargs)
    ref = reference.assign_and_neg_loss_dense(pb.points, pb.strides, pb.distances, pb.cls_logits, pb.ctr_logits,
                                              pb.gt_boxes, pb.gt_labels, **kwargs)
    assert_close(fused.weights.pos_weight, at_pairs(ref.bags, ref.weights.pos_weight))
    p_neg = dense_entry_weight(pb.cls_logits.shape, fused.weights.neg_index, fused.weights.neg_prob)
    assert_close(p_neg, ref.weights.p_neg)
    assert_close(fused.weights.neg_normalizer, ref.weights.neg_normalizer)
    assert_close(fused.neg_loss, ref.neg_loss)
    return fused, ref


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["random", "no_gt", "empty_image_next_to_gts", "whole_image", "zero_area",
                                  "duplicates"])
def test_matches_dense_reference(case, mode):
    for seed in range(2):
        check_assignment(problem(case, seed), **MODES[mode])


@pytest.mark.parametrize("mode", ["released", "paper"])
def test_random_problems_exercise_every_branch(mode):
    fused, _ = check_assignment(problem("random", seed=3), **MODES[mode])
    pair_neg = fused.weights.pair_neg_prob
    assert (pair_neg == 1).any() and (pair_neg < 0.5).any()  # IoU below and above 0.5
    assert len(fused.weights.neg_index) < len(pair_neg)  # same-class GTs share entries


def large_problem():
    """Thousands of points and tens of GTs: the CPU kernels split their loops across threads."""
    levels = ((30, 40, 8), (15, 20, 16), (8, 10, 32))
    return random_problem(4, num_gts=(30, 20), num_classes=6, levels=levels, image_hw=(240, 320))


def test_large_batch_matches_dense_reference():
    fused, _ = check_assignment(large_problem())
    assert len(fused.bag.gt_index) > 4 * 2048  # the bag kernels split work in chunks of 2048 pairs


def test_float32_matches_dense_reference():
    pb = problem("random", seed=1, dtype=torch.float32)
    fused = fused_assignment(pb)
    ref = reference.assign_and_neg_loss_dense(pb.points, pb.strides, pb.distances, pb.cls_logits, pb.ctr_logits,
                                              pb.gt_boxes, pb.gt_labels)
    assert_close(fused.weights.pos_weight, at_pairs(ref.bags, ref.weights.pos_weight), rtol=1e-4, atol=1e-6)
    p_neg = dense_entry_weight(pb.cls_logits.shape, fused.weights.neg_index, fused.weights.neg_prob)
    assert_close(p_neg, ref.weights.p_neg, rtol=1e-4, atol=1e-5)
    assert_close(fused.neg_loss, ref.neg_loss, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", ["small", "large"])
def test_gradients_match_dense_reference(size):
    pb = problem("random", seed=2) if size == "small" else large_problem()
    leaves = [t.clone().requires_grad_() for t in (pb.distances, pb.cls_logits, pb.ctr_logits)]
    fused = fused_assignment(pb._replace(distances=leaves[0], cls_logits=leaves[1], ctr_logits=leaves[2]))
    (fused.neg_loss + (fused.weights.pos_weight * fused.bag.giou_loss).sum()).backward()
    ref_leaves = [t.clone().requires_grad_() for t in (pb.distances, pb.cls_logits, pb.ctr_logits)]
    ref = reference.assign_and_neg_loss_dense(pb.points, pb.strides, *ref_leaves, pb.gt_boxes, pb.gt_labels)
    pos_loc = sum((w * bag.giou_loss)[bag.inside].sum() for w, bag in zip(ref.weights.pos_weight, ref.bags))
    (ref.neg_loss + pos_loc).backward()
    for got, want in zip(leaves, ref_leaves):
        assert_close(got.grad, want.grad)


def test_duplicates_take_the_minimum():
    pb = problem("duplicates")
    fused, ref = check_assignment(pb)
    w = fused.weights
    entry = dw_ops.pair_entry_index(fused.bag, pb.labels, len(pb.points), pb.num_classes)
    expected = {}
    for e, y in zip(entry.tolist(), w.pair_neg_prob.tolist()):
        expected[e] = min(expected.get(e, 1.0), y)
    assert w.neg_index.tolist() == sorted(expected)
    assert_close(w.neg_prob, torch.tensor([expected[e] for e in sorted(expected)], dtype=torch.float64))
    assert len(expected) < len(entry)


def test_image_without_gt_is_all_negative():
    pb = problem("empty_image_next_to_gts")
    fused, ref = check_assignment(pb)
    assert (fused.bag.image_index == 1).all()
    assert (ref.weights.p_neg[0] == 1).all()
    num_entries = pb.cls_logits[0].numel()
    assert (fused.weights.neg_index >= num_entries).all()


# ---- hand examples ----------------------------------------------------------------------------------

def handmade_bag(iou, pair_gt, pair_point, gt_offsets, score=None, giou_loss=None, prior=None):
    """One image; per-pair values given directly (BagPairs is what candidate_bag_iou returns)."""
    iou = torch.tensor(iou, dtype=torch.float64)
    ones = torch.ones_like(iou)
    pair_gt = torch.tensor(pair_gt)
    gt_image = torch.zeros(len(gt_offsets) - 1, dtype=torch.long)
    bag = dw_ops.BagPairs(pair_gt, torch.tensor(pair_point), gt_image[pair_gt], torch.tensor(gt_offsets), gt_image,
                          ones if prior is None else torch.tensor(prior, dtype=torch.float64), iou,
                          ones * 0.5 if giou_loss is None else torch.tensor(giou_loss, dtype=torch.float64))
    return bag, ones * 0.5 if score is None else torch.tensor(score, dtype=torch.float64)


def test_released_p_neg_hand_example():
    # GT 0 holds points 0, 1, 2 with IoU 0.9, 0.7, 0.4; GT 1 (same class 1) holds points 1, 3 with 0.6, 0.8.
    # T(IoU) = (1 - IoU^2) / 0.75. GT 0: T = 0.19, 0.51, 0.84 (/0.75), t1 = 0.19/0.75, t2 = min(1, 1.12) = 1,
    # so point 1 gets (0.51 - 0.19) / (0.75 - 0.19) = 4/7, point 0 gets ~0 and point 2 (IoU < 0.5) gets 1.
    # GT 1: t1 = T(0.8), t2 = T(0.6): point 1 gets 1, point 3 gets ~0. Point 1 keeps min(4/7, 1).
    bag, score = handmade_bag([0.9, 0.7, 0.4, 0.6, 0.8], [0, 0, 0, 1, 1], [0, 1, 2, 1, 3], [0, 3, 5])
    labels = torch.tensor([1, 1])
    w = dw_ops.dual_weights(bag, score, labels, num_points=4, num_classes=2)
    assert_close(w.pair_neg_prob, torch.tensor([0.0, 4 / 7, 1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-11, rtol=0)
    assert w.neg_index.tolist() == [1, 3, 5, 7]  # (point, class 1)
    assert_close(w.neg_prob, torch.tensor([0.0, 4 / 7, 1.0, 0.0], dtype=torch.float64), atol=1e-11, rtol=0)
    assert_close(w.neg_normalizer, torch.tensor(1 + 3 / 7 + 1, dtype=torch.float64))

    iou = torch.tensor([[0.9, 0.0], [0.7, 0.6], [0.4, 0.0], [0.0, 0.8]], dtype=torch.float64)
    inside = iou > 0
    dense = reference.released_neg_prob(iou, inside)
    assert_close(dense[inside], torch.tensor([0.0, 4 / 7, 1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-11, rtol=0)


def test_paper_p_neg_known_values():
    iou = [0.3, 0.5, 0.725, 0.95, 0.97]
    # gamma1 = 2: k = 1 / (0.95^2 - 0.5^2) = 1 / 0.6525, b = k 0.9025; at 0.725: (0.9025 - 0.525625) / 0.6525.
    expected = torch.tensor([1.0, 1.0, 0.376875 / 0.6525, 0.0, 0.0], dtype=torch.float64)
    bag, score = handmade_bag(iou, [0] * 5, list(range(5)), [0, 5])
    w = dw_ops.dual_weights(bag, score, torch.tensor([0]), 5, 1, neg_mode="paper")
    assert_close(w.pair_neg_prob, expected, atol=1e-12, rtol=0)
    assert_close(reference.paper_neg_prob(torch.tensor(iou, dtype=torch.float64)), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("pos_mode", ["released", "paper"])
def test_pos_weight_hand_example(pos_mode):
    score, giou_loss, iou, prior = [0.5, 0.8, 0.3], [0.2, 0.1, 0.6], [0.7, 0.9, 0.45], [1.0, 0.5, 0.25]
    if pos_mode == "released":  # t = s exp(-5 L); exp(5t) in the numerator, exp(3t) in the normaliser
        t = [s * math.exp(-5 * g) for s, g in zip(score, giou_loss)]
        mu_den = 3
    else:  # eq. 3-4: t = s IoU^5, exp(5t) in both
        t = [s * i ** 5 for s, i in zip(score, iou)]
        mu_den = 5
    norm = sum(math.exp(mu_den * ti) * ti * p for ti, p in zip(t, prior))
    expected = torch.tensor([math.exp(5 * ti) * ti * p / norm for ti, p in zip(t, prior)], dtype=torch.float64)
    bag, s = handmade_bag(iou, [0, 0, 0], [0, 1, 2], [0, 3], score=score, giou_loss=giou_loss, prior=prior)
    w = dw_ops.dual_weights(bag, s, torch.tensor([0]), 3, 1, pos_mode=pos_mode)
    assert_close(w.pos_weight, expected)


def test_zero_prior_gives_zero_weight_not_nan():
    bag, score = handmade_bag([0.7, 0.8], [0, 0], [0, 1], [0, 2], prior=[0.0, 0.0])
    w = dw_ops.dual_weights(bag, score, torch.tensor([0]), 2, 1)
    assert w.pos_weight.tolist() == [0.0, 0.0]


# ---- bad input ------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    bag, score = handmade_bag([0.7, 0.8], [0, 0], [0, 1], [0, 2])
    labels = torch.tensor([0])
    with pytest.raises(ValueError, match="pos_mode and neg_mode must be one of"):
        dw_ops.dual_weights(bag, score, labels, 2, 1, pos_mode="Released")
    with pytest.raises(ValueError, match=r"labels must have shape \(1,\), one per GT"):
        dw_ops.dual_weights(bag, score, torch.tensor([0, 1]), 2, 1)
    ops = torch.ops.dw_ops
    args = (score, bag.iou, bag.giou_loss, bag.prior)
    with pytest.raises(RuntimeError, match="iou must have K = 2 elements"):
        ops.dual_weights(score, bag.iou[:1], bag.giou_loss, bag.prior, bag.gt_offsets, 0, 5.0, 5.0, 3.0, 0, 2.0)
    with pytest.raises(RuntimeError, match="prior must have the dtype of score"):
        ops.dual_weights(*args[:3], bag.prior.float(), bag.gt_offsets, 0, 5.0, 5.0, 3.0, 0, 2.0)
    with pytest.raises(RuntimeError, match="gt_pair_offsets must start at 0 and end at K = 2"):
        ops.dual_weights(*args, torch.tensor([0, 1]), 0, 5.0, 5.0, 3.0, 0, 2.0)
    with pytest.raises(RuntimeError, match="gt_pair_offsets must be non-decreasing"):
        ops.dual_weights(*args, torch.tensor([0, 2, 1, 2]), 0, 5.0, 5.0, 3.0, 0, 2.0)
    with pytest.raises(RuntimeError, match="gt_pair_offsets must be int64"):
        ops.dual_weights(*args, torch.tensor([0, 2], dtype=torch.int32), 0, 5.0, 5.0, 3.0, 0, 2.0)

