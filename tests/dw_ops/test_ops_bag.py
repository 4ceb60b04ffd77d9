"""candidate_bag_iou (bag_pairs + bag_iou) against the dense reference, known values and gradcheck."""
import math

import pytest
import torch
from torch.testing import assert_close

import dw_ops
from dw_ops import reference
from ops_problems import GT_CASES, at_pairs, make_points, random_problem


def check_bag(pb, *, hard_prior=False, sigma=1.11):
    """Fused pairs, prior, IoU and GIoU loss equal the dense reference at its inside pairs."""
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, pb.distances, pb.gt_boxes, sigma=sigma,
                                   hard_prior=hard_prior)
    ref = reference.bag_iou_dense(pb.points, pb.strides, pb.distances, pb.gt_boxes, sigma, hard_prior)
    counts = torch.tensor([len(b) for b in pb.gt_boxes])
    first_gt = torch.cumsum(counts, 0) - counts
    expected = torch.cat([r.inside.t().nonzero() + torch.tensor([int(g0), 0]) for r, g0 in zip(ref, first_gt)])
    assert torch.equal(bag.gt_index, expected[:, 0])
    assert torch.equal(bag.point_index, expected[:, 1])
    per_gt = torch.cat([r.inside.sum(0) for r in ref])
    assert torch.equal(bag.gt_offsets, torch.cat([torch.zeros(1, dtype=torch.long), per_gt.cumsum(0)]))
    assert torch.equal(bag.gt_image, torch.repeat_interleave(torch.arange(len(counts)), counts))
    assert torch.equal(bag.image_index, bag.gt_image[bag.gt_index])
    assert_close(bag.prior, at_pairs(ref, [r.prior for r in ref]))
    assert_close(bag.iou, at_pairs(ref, [r.iou for r in ref]))
    assert_close(bag.giou_loss, at_pairs(ref, [r.giou_loss for r in ref]))
    return bag, ref


@pytest.mark.parametrize("case", GT_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard_prior", [False, True])
def test_matches_dense_reference(case, dtype, hard_prior):
    for seed in range(2):
        check_bag(random_problem(seed, num_gts=(7, 4), dtype=dtype, gt_boxes=GT_CASES[case]), hard_prior=hard_prior)


def test_many_gts_and_other_sigma():
    check_bag(random_problem(3, num_gts=(25, 1, 12)), sigma=2.0)


@pytest.mark.parametrize("case", ["random", "empty_image_next_to_gts", "whole_image", "duplicates"])
def test_backward_matches_dense_reference(case):
    pb = random_problem(5, gt_boxes=GT_CASES[case])
    fused_dist = pb.distances.clone().requires_grad_()
    ref_dist = pb.distances.clone().requires_grad_()
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, fused_dist, pb.gt_boxes)
    ref = reference.bag_iou_dense(pb.points, pb.strides, ref_dist, pb.gt_boxes)
    pair_weight = torch.rand(bag.giou_loss.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (bag.giou_loss * pair_weight).sum().backward()
    (at_pairs(ref, [r.giou_loss for r in ref]) * pair_weight).sum().backward()
    assert_close(fused_dist.grad, ref_dist.grad)


def test_empty_batch():
    points, strides = make_points()
    distances = torch.rand(0, len(points), 4, dtype=torch.float64, requires_grad=True)
    bag = dw_ops.candidate_bag_iou(points, strides, distances, [])
    bag.giou_loss.sum().backward()
    assert bag.gt_offsets.tolist() == [0] and bag.giou_loss.numel() == 0 and distances.grad.shape == distances.shape


def test_edge_cases_as_expected():
    pb = random_problem(0, gt_boxes=GT_CASES["zero_area"])
    bag, _ = check_bag(pb)
    assert bag.gt_offsets.tolist() == [0, 0, 0, len(bag.gt_index)] and len(bag.gt_index) > 0

    pb = random_problem(0, gt_boxes=GT_CASES["whole_image"])
    bag, _ = check_bag(pb)
    # The stride-32 level's last column sits at x = 80, on the first box's right edge.
    assert bag.gt_offsets.tolist() == [0, len(pb.points) - 2, 2 * len(pb.points) - 2]

    pb = random_problem(0, gt_boxes=GT_CASES["points_on_edges"])
    bag, _ = check_bag(pb)
    inside = pb.points[bag.point_index]
    # stride 8: x in {20, 28}, y in {12, 20}; stride 16: (24, 8), (24, 24); stride 32: (16, 16).
    assert sorted(map(tuple, inside.tolist())) == sorted(
        [(20.0, 12.0), (28.0, 12.0), (20.0, 20.0), (28.0, 20.0), (24.0, 8.0), (24.0, 24.0), (16.0, 16.0)])


def test_known_values():
    # Point (10, 10), stride 8, predicts (8, 8, 12, 12); GT (9, 9, 15, 13) centred at (12, 11).
    points, strides = torch.tensor([[10.0, 10.0]]), torch.tensor([8.0])
    distances = torch.tensor([[[2.0, 2.0, 2.0, 2.0]]], dtype=torch.float64)
    gt_boxes = [torch.tensor([[9.0, 9.0, 15.0, 13.0]], dtype=torch.float64)]
    iou = 9 / 31  # overlap 3 x 3, union 16 + 24 - 9
    giou = iou - (35 - 31) / 35  # enclosing box 7 x 5
    prior = math.exp(-((2 / 8) ** 2 + (1 / 8) ** 2) / (2 * 1.11 ** 2))
    bag = dw_ops.candidate_bag_iou(points, strides, distances, gt_boxes)
    ref = reference.bag_iou_dense(points, strides, distances, gt_boxes)[0]
    for got in (bag, ref):
        assert_close(got.iou.flatten(), torch.tensor([iou], dtype=torch.float64))
        assert_close(got.giou_loss.flatten(), torch.tensor([1 - giou], dtype=torch.float64))
        assert_close(got.prior.flatten(), torch.tensor([prior], dtype=torch.float64))
    hard = dw_ops.candidate_bag_iou(points, strides, distances, gt_boxes, hard_prior=True)
    assert hard.prior.tolist() == [1.0]  # soft prior 0.97 > 0.3


def test_reference_giou_of_disjoint_boxes():
    iou, giou = reference.aligned_iou_giou(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([2.0, 0.0, 3.0, 1.0]))
    assert iou.item() == 0.0
    assert_close(giou, torch.tensor(-1 / 3))  # enclosing 3, union 2


def test_non_contiguous_inputs():
    pb = random_problem(1)
    distances = pb.distances.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    points = pb.points.t().contiguous().t()
    strides = torch.stack([pb.strides, pb.strides], dim=1)[:, 0]
    gt_boxes = [b.t().contiguous().t() for b in pb.gt_boxes]
    assert not any(t.is_contiguous() for t in (distances, points, strides, gt_boxes[0]))
    got = dw_ops.candidate_bag_iou(points, strides, distances, gt_boxes)
    contiguous = pb.distances.clone().requires_grad_()
    want = dw_ops.candidate_bag_iou(pb.points, pb.strides, contiguous, pb.gt_boxes)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=0, atol=0)
    got.giou_loss.sum().backward()
    want.giou_loss.sum().backward()
    assert_close(distances.grad, contiguous.grad, rtol=0, atol=0)


def predicted_boxes(pb, bag):
    x, y = pb.points[bag.point_index].unbind(-1)
    d = pb.distances[bag.image_index, bag.point_index]
    return torch.stack([x - d[:, 0], y - d[:, 1], x + d[:, 2], y + d[:, 3]], dim=-1)


@pytest.mark.parametrize("seed", range(4))
def test_gradcheck(seed):
    pb = random_problem(seed, num_gts=(3, 2), levels=((4, 5, 8), (2, 3, 16)))
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, pb.distances, pb.gt_boxes)
    gts = torch.cat(pb.gt_boxes)[bag.gt_index]
    assert len(gts) > 5
    # The min/max in IoU have kinks where a predicted side meets a GT side: stay clear of them.
    assert (predicted_boxes(pb, bag)[:, None, :] - gts[:, :, None]).abs().min() > 1e-3

    def giou_loss(distances):
        return dw_ops.candidate_bag_iou(pb.points, pb.strides, distances, pb.gt_boxes).giou_loss

    assert torch.autograd.gradcheck(giou_loss, (pb.distances.clone().requires_grad_(),), fast_mode=True)


# ---- bad input ------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    pb = random_problem(0, dtype=torch.float32)
    pts, strides, dist, boxes = pb.points, pb.strides, pb.distances, pb.gt_boxes
    with pytest.raises(ValueError, match=r"distances must have shape \(N, P, 4\)"):
        dw_ops.candidate_bag_iou(pts, strides, dist[..., :3], boxes)
    with pytest.raises(TypeError, match="gt_boxes must be a list"):
        dw_ops.candidate_bag_iou(pts, strides, dist, boxes[0])
    with pytest.raises(ValueError, match="gt_boxes has 1 entries but distances has 2 images"):
        dw_ops.candidate_bag_iou(pts, strides, dist, boxes[:1])
    with pytest.raises(ValueError, match=r"gt_boxes\[1\] must have shape \(G, 4\)"):
        dw_ops.candidate_bag_iou(pts, strides, dist, [boxes[0], boxes[1][:, :3]])
    with pytest.raises(ValueError, match=r"gt_boxes\[0\] is on meta but distances is on cpu"):
        dw_ops.candidate_bag_iou(pts, strides, dist, [boxes[0].to("meta"), boxes[1]])
    with pytest.raises(RuntimeError, match=r"points must have shape \(P, 2\)"):
        dw_ops.candidate_bag_iou(pts[:, :1], strides, dist, boxes)
    with pytest.raises(RuntimeError, match=r"strides must have shape \(P,\)"):
        dw_ops.candidate_bag_iou(pts, strides[1:], dist, boxes)
    with pytest.raises(RuntimeError, match=r"distances must have shape \(N, P, 4\) with P = points.size\(0\)"):
        dw_ops.candidate_bag_iou(pts[1:], strides[1:], dist, boxes)
    ops = torch.ops.dw_ops
    with pytest.raises(RuntimeError, match="points must be float32 or float64, got Int"):
        ops.bag_pairs(pts.int(), torch.cat(boxes).int())
    with pytest.raises(RuntimeError, match="gt_boxes must have the dtype of points"):
        ops.bag_pairs(pts, torch.cat(boxes).double())
    with pytest.raises(RuntimeError, match=r"gt_boxes must have shape \(M, 4\)"):
        ops.bag_pairs(pts, torch.cat(boxes)[:, :2])
    pair_gt, pair_point, _ = ops.bag_pairs(pts, torch.cat(boxes))
    gt_image = torch.tensor([0] * len(boxes[0]) + [1] * len(boxes[1]))
    with pytest.raises(RuntimeError, match="distances must have the dtype of points"):
        ops.bag_iou(pts, strides, dist.double(), torch.cat(boxes), gt_image, pair_gt, pair_point, 1.11, False)
    with pytest.raises(RuntimeError, match=r"gt_image must index images of distances in \[0, 1\)"):
        ops.bag_iou(pts, strides, dist[:1], torch.cat(boxes), gt_image, pair_gt, pair_point, 1.11, False)
    with pytest.raises(RuntimeError, match="pair_gt and pair_point must have the same length"):
        ops.bag_iou(pts, strides, dist, torch.cat(boxes), gt_image, pair_gt, pair_point[1:], 1.11, False)


def test_half_distances_error_names_distances():
    pb = random_problem(0, dtype=torch.float32)
    with pytest.raises((RuntimeError, ValueError), match="distances"):
        dw_ops.candidate_bag_iou(pb.points, pb.strides, pb.distances.half(), pb.gt_boxes)
