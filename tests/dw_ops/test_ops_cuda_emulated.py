"""Every dw_ops CUDA kernel, run on the CPU by the emulation in tests/cuda_emu (the kernel text of
csrc/cuda/*_kernels.cuh, one host thread per CUDA thread, real barriers and warp shuffles), against
the CPU ops. The grids are chosen to take each kernel's paths: one block striding over everything,
a few blocks that each stride more than once, one thread per element, and more threads than work.
Every output element must be stored exactly once, and bad index values must fail the in-kernel
checks with their messages. These tests need no GPU."""
import math
import sys

import pytest
import torch
from torch.testing import assert_close

import dw_ops
from ops_problems import make_points, random_boxes
from tests.paths import ROOT

sys.path.insert(0, str(ROOT / "tests" / "cuda_emu"))
try:
    import _cuda_emu as emu
except ImportError as err:  # `make test` builds it; a bare pytest run may not have
    raise ImportError(f"the CUDA emulation is not built: run `make emu` ({err})") from err

ops = torch.ops.dw_ops
THREADS = emu.threads_per_block
# The emulation and the CPU ops run the same dw_math.h, but the CPU ops are compiled with FMA and
# AVX2 (a SIMD log1p in neg_loss), so float32 differs by a few ulps.
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-14), torch.float32: dict(rtol=2e-5, atol=1e-6),
       torch.float16: dict(rtol=2e-3, atol=1e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-3)}


def grids(n: int) -> list:
    """Block counts for n work items of one thread each: 1 (every thread strides), 2 (each stride
    crosses a block boundary), exactly enough, and more threads than items."""
    enough = math.ceil(n / THREADS)
    assert enough > 2, f"{n} items do not make the first two grids stride"
    return [1, 2, enough, enough + 2]


def assert_written_once(*counts):
    for c in counts:
        assert c.numel() > 0 and bool((c == 1).all()), f"stores per element: {c.unique().tolist()}"


# ---- candidate bags -------------------------------------------------------------------------------

LEVELS = ((16, 20, 4), (8, 10, 8), (4, 5, 16))  # P = 420 points on a 64 x 80 image


def _bag_problem(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    points, strides = make_points(LEVELS, dtype)
    gt_boxes = [random_boxes(5, g, dtype), torch.zeros(0, 4, dtype=dtype), random_boxes(4, g, dtype)]
    gt_boxes[0][0] = torch.tensor([0.0, 0.0, 80.0, 64.0], dtype=dtype)  # every point: a bag of all P points
    distances = (torch.rand(3, len(points), 4, generator=g, dtype=torch.float64) * 20 + 0.5).to(dtype)
    packed = torch.cat(gt_boxes)
    gt_image = torch.tensor([0] * 5 + [2] * 4)
    return points, strides, distances, packed, gt_image


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inside_mask_kernel_matches_the_cpu_bag(dtype):
    points, _, _, boxes, _ = _bag_problem(dtype)
    pair_gt, pair_point, _ = ops.bag_pairs(points, boxes)
    expected = torch.zeros(len(boxes), len(points), dtype=torch.bool)
    expected[pair_gt, pair_point] = True
    for blocks in grids(expected.numel()):
        inside, writes = emu.inside_mask(points, boxes, blocks)
        assert torch.equal(inside, expected), blocks
        assert_written_once(writes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard_prior", [False, True])
def test_bag_iou_kernels_match_the_cpu_op(dtype, hard_prior):
    points, strides, distances, boxes, gt_image = _bag_problem(dtype)
    pair_gt, pair_point, _ = ops.bag_pairs(points, boxes)
    expected = ops.bag_iou(points, strides, distances, boxes, gt_image, pair_gt, pair_point, 1.11, hard_prior)
    grad = torch.rand(len(pair_gt), dtype=dtype)
    expected_grad = ops._bag_iou_backward(grad, points, distances, boxes, gt_image, pair_gt, pair_point)
    for blocks in grids(len(pair_gt)):
        *out, w_prior, w_iou, w_loss = emu.bag_iou(points, strides, distances, boxes, gt_image, pair_gt, pair_point,
                                                   1.11, hard_prior, blocks)
        for a, e in zip(out, expected):
            assert_close(a, e, **TOL[dtype])
        assert_written_once(w_prior, w_iou, w_loss)
        pair_grad, w_grad = emu.bag_iou_backward(points, distances, boxes, gt_image, pair_gt, pair_point, grad, blocks)
        assert_written_once(w_grad)
        summed = torch.zeros_like(distances).view(-1, 4).index_add_(0, gt_image[pair_gt] * len(points) + pair_point,
                                                                    pair_grad)
        assert_close(summed.view_as(distances), expected_grad, **TOL[dtype])


@pytest.mark.parametrize("field,value,message", [
    ("pair_gt", 9, "pair_gt must index rows of gt_boxes"),
    ("pair_gt", -1, "pair_gt must index rows of gt_boxes"),
    ("pair_point", 420, "pair_point must index points"),
    ("gt_image", 3, "gt_image must index images of distances"),
])
def test_bag_iou_kernels_check_the_index_values(field, value, message):
    points, strides, distances, boxes, gt_image = _bag_problem(torch.float32)
    pair_gt, pair_point, _ = ops.bag_pairs(points, boxes)
    args = dict(gt_image=gt_image.clone(), pair_gt=pair_gt.clone(), pair_point=pair_point.clone())
    args[field][-1] = value
    with pytest.raises(RuntimeError, match=f"device-side check failed: {message}"):
        emu.bag_iou(points, strides, distances, boxes, args["gt_image"], args["pair_gt"], args["pair_point"], 1.11,
                    False, 2)
    with pytest.raises(RuntimeError, match=f"device-side check failed: {message}"):
        emu.bag_iou_backward(points, distances, boxes, args["gt_image"], args["pair_gt"], args["pair_point"],
                             torch.ones(len(pair_gt)), 2)


# ---- dual weights ---------------------------------------------------------------------------------

def _dual_weight_inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 5, 300, 1, 0, 700, 257, 3, 0])  # empty bags, and bags longer than a block
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    K = int(offsets[-1])

    def rand(scale=1.0):
        return (torch.rand(K, generator=g, dtype=torch.float64) * scale).to(dtype)

    return [rand(), rand(0.99), rand(2.0), rand(), offsets]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("modes", [(0, 0), (1, 1)])
def test_dual_weights_kernel_matches_the_cpu_op(dtype, modes):
    inputs = _dual_weight_inputs(dtype)
    inputs[1][400] = float("nan")  # a NaN IoU inside the 700-pair bag, away from thread 0
    args = (modes[0], 5.0, 5.0, 3.0, modes[1], 2.0)
    expected = ops.dual_weights(*inputs, *args)
    M = len(inputs[-1]) - 1
    for blocks in (1, 2, M, M + 3):  # one block strides over all GTs, ..., blocks without a GT
        pos, neg, w_pos, w_neg = emu.dual_weights(*inputs, *args, blocks)
        for a, e in zip((pos, neg), expected):
            assert torch.equal(a.isnan(), e.isnan())
            assert_close(a, e, equal_nan=True, **TOL[dtype])
        assert_written_once(w_pos, w_neg)


@pytest.mark.parametrize("offsets,message", [
    ([1, 5, 10], "gt_pair_offsets must start at 0"),
    ([0, 5, 9], "gt_pair_offsets must end at K"),
    ([0, 6, 4, 10], "gt_pair_offsets must be non-decreasing"),
])
def test_dual_weights_kernel_checks_the_offsets(offsets, message):
    values = torch.rand(10)
    with pytest.raises(RuntimeError, match=f"device-side check failed: {message}"):
        emu.dual_weights(values, values, values, values, torch.tensor(offsets), 0, 5.0, 5.0, 3.0, 0, 2.0, 2)


# ---- neg_loss -------------------------------------------------------------------------------------

def _neg_loss_inputs(dtype, N=2, P=700, C=3, entries=900, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, C, P, generator=g, dtype=torch.float64) * 3).to(dtype)  # class-major, as the kernels read
    ctr = torch.randn(N, P, generator=g, dtype=torch.float64).to(dtype)
    index = torch.randperm(N * P * C, generator=g)[:entries].sort().values
    weight = torch.rand(entries, generator=g, dtype=torch.float64)
    return x, ctr, index, weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("compute_grad", [True, False])
def test_neg_loss_kernels_match_the_cpu_op(dtype, compute_grad):
    x, ctr, index, weight = _neg_loss_inputs(dtype)
    N, C, P = x.shape
    loss, grad_cls, grad_ctr = ops.neg_loss(x.transpose(1, 2), ctr, index, weight.float(), 2.0, 1.5, 0.7, compute_grad)
    for blocks, entry_blocks in zip(grids(N * P), reversed(grids(len(index)))):
        partial, d_cls, d_ctr, w_partial, w_cls, w_ctr = emu.neg_loss_dense(x, ctr, 2.0, 0.7, compute_grad, blocks)
        correction, e_cls, ctr_corr, w_corr, w_e_cls, w_ctr_corr = emu.neg_loss_entries(
            x, ctr, index, weight.float().double(), 2.0, 1.5, 0.7, compute_grad, entry_blocks)
        assert_written_once(w_partial, w_corr)
        assert_close(partial.sum() + correction.sum(), loss.double(), **TOL[dtype])
        if not compute_grad:
            assert d_cls.numel() == d_ctr.numel() == e_cls.numel() == ctr_corr.numel() == 0
            continue
        assert_written_once(w_cls, w_ctr, w_ctr_corr)
        entry_mask = torch.zeros(N * P * C, dtype=torch.int32)
        entry_mask[index] = 1  # the entry kernel stores exactly the listed entries
        assert torch.equal(w_e_cls.transpose(1, 2).reshape(-1), entry_mask)
        # The entries' class gradients replace the dense ones; their centerness corrections add up per point.
        d_cls = torch.where(w_e_cls.bool(), e_cls, d_cls)
        d_ctr = d_ctr.reshape(-1).index_add(0, index // C, ctr_corr).view(N, P)
        assert_close(d_cls.transpose(1, 2), grad_cls, **TOL[dtype])
        assert_close(d_ctr, grad_ctr, **TOL[dtype])


@pytest.mark.parametrize("change,message", [
    ("out_of_range", "entry_index must index flat"),
    ("repeated", "entry_index must be strictly increasing"),
])
def test_neg_loss_entry_kernel_checks_the_entries(change, message):
    x, ctr, index, weight = _neg_loss_inputs(torch.float32, entries=10)
    if change == "out_of_range":
        index[-1] = x.numel()
    else:
        index[5] = index[4]
    with pytest.raises(RuntimeError, match=f"device-side check failed: {message}"):
        emu.neg_loss_entries(x, ctr, index, weight, 2.0, 2.0, 1.0, True, 1)


# ---- boundary_sample ------------------------------------------------------------------------------

def _sample_inputs(dtype, shape=(2, 9, 13), seed=0):
    g = torch.Generator().manual_seed(seed)
    N, H, W = shape
    boxes = torch.randn(N, 4, H, W, generator=g).to(dtype)
    offsets = (torch.randn(N, 8, H, W, generator=g) * 4).to(dtype)  # some samples leave the map
    offsets[0, 2, 3, 4] = float("nan")  # a NaN sample point propagates
    return boxes, offsets


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_boundary_sample_kernels_match_the_cpu_op(dtype):
    boxes, offsets = _sample_inputs(dtype)
    grad = torch.randn(boxes.shape).to(dtype)
    expected = ops.boundary_sample(boxes, offsets)
    expected_boxes, expected_offsets = ops._boundary_sample_backward(grad, boxes, offsets)
    for blocks in grids(boxes.numel()):
        out, w_out = emu.boundary_sample(boxes, offsets, blocks)
        assert_close(out, expected, equal_nan=True, **TOL[dtype])
        assert_written_once(w_out)
        target, contrib, d_offsets, w_target, w_contrib, w_offsets = emu.boundary_sample_backward(
            grad, boxes, offsets, blocks)
        assert_written_once(w_target, w_contrib, w_offsets)
        assert bool(((target >= 0) & (target < boxes.numel())).all())
        d_boxes = torch.zeros(boxes.numel(), dtype=contrib.dtype).index_add_(0, target, contrib)
        assert_close(d_boxes.view(boxes.shape).to(dtype), expected_boxes, equal_nan=True, **TOL[dtype])
        assert_close(d_offsets, expected_offsets, equal_nan=True, **TOL[dtype])
