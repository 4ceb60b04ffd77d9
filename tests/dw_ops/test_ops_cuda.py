"""CUDA kernels against the CPU kernels, forward and backward, for every op and dtype.

The CPU kernels are checked against the dense references in the other test files; here the CUDA
kernels must agree with them (they share csrc/common/dw_math.h, so the per-element math is the same;
only reduction order and fused multiply-adds differ)."""
import pytest
import torch
from torch.testing import assert_close

import dw_ops
from ops_problems import GT_CASES, fused_assignment, make_logits, make_sampling, random_problem

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
# 16-bit outputs: a few units in the last place (other summation order), relative to the largest value.
HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_close_to_cpu(cuda_value, cpu_value, dtype=None, **kwargs):
    if dtype in HALF_TOL:
        tol = HALF_TOL[dtype]
        kwargs = {"rtol": tol, "atol": tol * cpu_value.abs().max().item(), **kwargs}
    assert cuda_value.device.type == "cuda"
    assert_close(cuda_value.cpu().to(cpu_value.dtype), cpu_value, **kwargs)


def test_extension_has_cuda_kernels():
    assert dw_ops.build_info()["with_cuda"], "dw_ops._C was built without CUDA: rebuild it on this machine"


# ---- candidate_bag_iou ------------------------------------------------------------------------------

def bag_and_grad(pb, hard_prior):
    distances = pb.distances.clone().requires_grad_()
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, distances, pb.gt_boxes, hard_prior=hard_prior)
    gen = torch.Generator().manual_seed(0)
    pair_weight = torch.rand(bag.giou_loss.shape, generator=gen, dtype=torch.float64).to(bag.giou_loss)
    (bag.giou_loss * pair_weight).sum().backward()
    return bag, distances.grad


@pytest.mark.parametrize("case", ["random", "no_gt", "empty_image_next_to_gts", "whole_image", "zero_area",
                                  "points_on_edges", "duplicates"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard_prior", [False, True])
def test_bag_matches_cpu(case, dtype, hard_prior):
    pb = random_problem(0, num_gts=(15, 6), dtype=dtype, gt_boxes=GT_CASES[case])
    cpu_bag, cpu_grad = bag_and_grad(pb, hard_prior)
    cuda_bag, cuda_grad = bag_and_grad(pb.to(CUDA), hard_prior)
    for name in ("gt_index", "point_index", "image_index", "gt_offsets", "gt_image"):  # same pairs, same order
        assert torch.equal(getattr(cuda_bag, name).cpu(), getattr(cpu_bag, name)), name
    for name in ("prior", "iou", "giou_loss"):
        assert_close_to_cpu(getattr(cuda_bag, name), getattr(cpu_bag, name))
    assert_close_to_cpu(cuda_grad, cpu_grad)


def test_bag_with_many_points_and_gts():
    levels = ((100, 120, 8), (50, 60, 16), (25, 30, 32), (13, 15, 64), (7, 8, 128))
    pb = random_problem(1, num_gts=(40, 0, 60), num_classes=80, dtype=torch.float32, levels=levels,
                        image_hw=(800, 960))
    cpu_bag, cpu_grad = bag_and_grad(pb, False)
    cuda_bag, cuda_grad = bag_and_grad(pb.to(CUDA), False)
    assert torch.equal(cuda_bag.gt_index.cpu(), cpu_bag.gt_index)
    assert torch.equal(cuda_bag.point_index.cpu(), cpu_bag.point_index)
    assert_close_to_cpu(cuda_bag.giou_loss, cpu_bag.giou_loss)
    assert_close_to_cpu(cuda_grad, cpu_grad)


# ---- dual_weights (through the whole fused assignment) ----------------------------------------------

@pytest.mark.parametrize("modes", [{}, {"pos_mode": "paper", "neg_mode": "paper", "gamma1": 1.5}, {"mu_den": 4.0}],
                         ids=["released", "paper", "custom_mu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["random", "empty_image_next_to_gts", "duplicates", "no_gt"])
def test_assignment_matches_cpu(case, dtype, modes):
    labels = [torch.tensor([2, 2, 2])] if case == "duplicates" else None
    pb = random_problem(2, num_gts=(15, 6), dtype=dtype, gt_boxes=GT_CASES[case], gt_labels=labels)
    cpu = fused_assignment(pb, **modes)
    cuda = fused_assignment(pb.to(CUDA), **modes)
    assert torch.equal(cuda.weights.neg_index.cpu(), cpu.weights.neg_index)
    # P_neg min-max normalises per GT: float32 rounding of the IoU is amplified in narrow bags.
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    for name in ("pos_weight", "pair_neg_prob", "neg_prob", "neg_normalizer"):
        assert_close_to_cpu(getattr(cuda.weights, name), getattr(cpu.weights, name), **tol)
    assert_close_to_cpu(cuda.neg_loss, cpu.neg_loss, **tol)


# ---- neg_loss -------------------------------------------------------------------------------------------

def neg_loss_and_grads(cls, ctr, index, weight, device, transpose=False):
    cls, ctr = cls.to(device), ctr.to(device)
    if transpose:  # an (N, P, C) view of an (N, C, P) tensor
        cls = cls.transpose(1, 2).contiguous().transpose(1, 2)
    cls, ctr = cls.detach().requires_grad_(), ctr.detach().requires_grad_()
    loss = dw_ops.neg_loss(cls, ctr, index.to(device), weight.to(device), gamma=2.0, gamma_in=1.5, base_weight=0.8)
    loss.backward(torch.tensor(1.3, dtype=loss.dtype, device=device))
    return loss.detach(), cls.grad, ctr.grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape, num_entries", [((2, 30, 5), 40), ((2, 3000, 80), 5000), ((1, 5, 1), 0)], ids=str)
@pytest.mark.parametrize("transpose", [False, True])
def test_neg_loss_matches_cpu(dtype, shape, num_entries, transpose):
    cls, ctr, index, weight = make_logits(0, shape, dtype, num_entries)
    weight = weight.float()
    cpu = neg_loss_and_grads(cls, ctr, index, weight, "cpu", transpose)
    cuda = neg_loss_and_grads(cls, ctr, index, weight, CUDA, transpose)
    assert cuda[0].dtype == cpu[0].dtype and cuda[1].dtype == dtype and cuda[2].dtype == dtype
    loss_tol = {"rtol": 1e-10, "atol": 0.0} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    assert_close_to_cpu(cuda[0], cpu[0], **loss_tol)
    for got, want in zip(cuda[1:], cpu[1:]):
        assert_close_to_cpu(got, want, dtype)


def test_neg_loss_empty_batch():
    cls = torch.zeros(0, 7, 3, device=CUDA, requires_grad=True)
    ctr = torch.zeros(0, 7, device=CUDA, requires_grad=True)
    loss = dw_ops.neg_loss(cls, ctr)
    loss.backward()
    assert loss.item() == 0.0 and cls.grad.shape == cls.shape and ctr.grad.shape == ctr.shape


# ---- boundary_sample --------------------------------------------------------------------------------

def sample_and_grads(boxes, offsets, device):
    boxes = boxes.detach().to(device).requires_grad_()
    offsets = offsets.detach().to(device).requires_grad_()
    out = dw_ops.boundary_sample(boxes, offsets)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=out.dtype)
    out.backward(grad_out)
    return out.detach(), boxes.grad, offsets.grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 4, 5, 6), (2, 4, 100, 152), (1, 4, 1, 7), (1, 4, 7, 1), (0, 4, 3, 3)],
                         ids=str)
def test_boundary_sample_matches_cpu(dtype, shape):
    boxes, offsets = make_sampling(0, shape, dtype)
    cpu = sample_and_grads(boxes, offsets, "cpu")
    cuda = sample_and_grads(boxes, offsets, CUDA)
    for got, want in zip(cuda, cpu):
        assert got.dtype == dtype
        if want.numel():
            assert_close_to_cpu(got, want, dtype)


def test_boundary_sample_far_outside_is_zero():
    boxes, offsets = make_sampling(1)
    offsets = torch.where(torch.rand(offsets.shape) < 0.5, 1e30, float("-inf")).double()
    out, grad_boxes, grad_offsets = sample_and_grads(boxes, offsets, CUDA)
    assert (out == 0).all() and (grad_boxes == 0).all() and (grad_offsets == 0).all()


# ---- gradcheck on the device --------------------------------------------------------------------------

def test_gradcheck_on_cuda():
    pb = random_problem(0, num_gts=(3, 2), levels=((4, 5, 8), (2, 3, 16))).to(CUDA)

    def giou_loss(distances):
        return dw_ops.candidate_bag_iou(pb.points, pb.strides, distances, pb.gt_boxes).giou_loss

    assert torch.autograd.gradcheck(giou_loss, (pb.distances.clone().requires_grad_(),), fast_mode=True)
    cls, ctr, index, weight = (t.to(CUDA) for t in make_logits(0, (2, 6, 3), num_entries=10))

    def neg(cls, ctr):
        return dw_ops.neg_loss(cls, ctr, index, weight, gamma_in=1.5, base_weight=0.7)

    assert torch.autograd.gradcheck(neg, (cls.requires_grad_(), ctr.requires_grad_()))
    boxes, offsets = (t.to(CUDA).requires_grad_() for t in make_sampling(0, (1, 4, 3, 4)))
    assert torch.autograd.gradcheck(dw_ops.boundary_sample, (boxes, offsets))


# ---- inputs on two devices ------------------------------------------------------------------------------

def test_mixed_devices_name_the_argument():
    pb = random_problem(0, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"gt_boxes\[0\] is on cpu but distances is on cuda:0"):
        dw_ops.candidate_bag_iou(pb.points, pb.strides, pb.distances.to(CUDA), pb.gt_boxes)
    ops = torch.ops.dw_ops
    with pytest.raises(RuntimeError, match="gt_boxes is on cpu but points is on cuda:0"):
        ops.bag_pairs(pb.points.to(CUDA), torch.cat(pb.gt_boxes))
    with pytest.raises(RuntimeError, match="strides is on cpu but points is on cuda:0"):
        dw_ops.candidate_bag_iou(pb.points.to(CUDA), pb.strides, pb.distances.to(CUDA),
                                 [b.to(CUDA) for b in pb.gt_boxes])
    cls, ctr, index, weight = make_logits(0, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="ctr_logits is on cpu but cls_logits is on cuda:0"):
        dw_ops.neg_loss(cls.to(CUDA), ctr, index.to(CUDA), weight.float().to(CUDA))
    with pytest.raises(RuntimeError, match="entry_index is on cpu but cls_logits is on cuda:0"):
        dw_ops.neg_loss(cls.to(CUDA), ctr.to(CUDA), index, weight.float().to(CUDA))
    boxes, offsets = make_sampling(0, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="offsets is on cpu but boxes is on cuda:0"):
        dw_ops.boundary_sample(boxes.to(CUDA), offsets)
    score = torch.rand(4, device=CUDA)
    with pytest.raises(RuntimeError, match="gt_pair_offsets is on cpu but score is on cuda:0"):
        ops.dual_weights(score, score, score, score, torch.tensor([0, 4]), 0, 5.0, 5.0, 3.0, 0, 2.0)
