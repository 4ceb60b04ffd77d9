"""boundary_sample against the gather-based reference and torchvision's deform_conv2d."""
import pytest
import torch
from torch.testing import assert_close

import dw_ops
from dw_ops import reference
from ops_problems import make_sampling

REFERENCES = {"dense": reference.boundary_sample_dense, "deform_conv2d": reference.boundary_sample_deform_conv}


def sample_and_grads(fn, boxes, offsets, seed=0):
    boxes, offsets = boxes.detach().requires_grad_(), offsets.detach().requires_grad_()
    out = fn(boxes, offsets)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), boxes.grad, offsets.grad


@pytest.mark.parametrize("ref", REFERENCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
# (2, 4, 6, 21): rows of 8 + 8 + 5, for the CPU's 8-sample AVX2 steps and its scalar tail.
@pytest.mark.parametrize("shape", [(2, 4, 5, 6), (1, 4, 1, 5), (1, 4, 4, 1), (1, 4, 1, 1), (2, 4, 6, 21)], ids=str)
def test_matches_references(ref, dtype, shape):
    for seed in range(2):
        boxes, offsets = make_sampling(seed, shape, dtype)
        got = sample_and_grads(dw_ops.boundary_sample, boxes, offsets)
        want = sample_and_grads(REFERENCES[ref], boxes, offsets)
        for a, b in zip(got, want):
            assert_close(a, b)


def test_known_values():
    boxes = torch.arange(1.0, 7.0, dtype=torch.float64).view(1, 1, 2, 3).repeat(1, 4, 1, 1)
    offsets = torch.zeros(1, 8, 2, 3, dtype=torch.float64)
    assert_close(dw_ops.boundary_sample(boxes, offsets), boxes)  # integer points: the cells themselves
    offsets[:, 1] = 0.5  # channel 0 half a cell to the right: the right neighbour is off the map at the end
    offsets[:, 2] = -0.25  # channel 1 a quarter cell up: row -1 is off the map
    out = dw_ops.boundary_sample(boxes, offsets)
    assert_close(out[0, 0], torch.tensor([[1.5, 2.5, 1.5], [4.5, 5.5, 3.0]], dtype=torch.float64))
    assert_close(out[0, 1], torch.tensor([[0.75, 1.5, 2.25], [3.25, 4.25, 5.25]], dtype=torch.float64))


def test_eight_sample_steps_agree_with_the_scalar_loop():
    # With every sample interior, float32 rows go 8 samples at a time through AVX2 gathers; a
    # sample pushed off the map sends its group of 8 through the scalar loop instead.
    boxes, offsets = make_sampling(4, shape=(1, 4, 5, 24), dtype=torch.float32, margin=0.0)
    out = dw_ops.boundary_sample(boxes, offsets)
    pushed = offsets.clone()
    pushed[:, 1, :, ::8] += 100.0  # dx of channel 0, first sample of each group
    out_pushed = dw_ops.boundary_sample(boxes, pushed)
    assert (out_pushed[:, 0, :, ::8] == 0).all()
    kept = torch.ones(24, dtype=torch.bool)
    kept[::8] = False
    assert_close(out_pushed[:, 0, :, kept], out[:, 0, :, kept], rtol=1e-6, atol=1e-6)
    assert_close(out_pushed[:, 1:], out[:, 1:], rtol=0, atol=0)
    assert_close(out.double(), dw_ops.boundary_sample(boxes.double(), offsets.double()), rtol=1e-5, atol=1e-4)


def test_samples_outside_the_map_are_zero():
    boxes, _ = make_sampling(1)
    N, _, H, W = boxes.shape
    gen = torch.Generator().manual_seed(0)
    offsets = []
    for size, grid in ((H, torch.arange(H).view(H, 1)), (W, torch.arange(W).view(1, W))):
        # y <= -1 or y >= H (x likewise), exactly on those borders included
        outside = torch.tensor([-1.0, size, -1.5, size + 0.5, -1e3, 1e3, -1e30, 1e30, float("inf"), float("-inf")],
                               dtype=torch.float64)
        offsets.append(outside[torch.randint(len(outside), (N, 4, H, W), generator=gen)] - grid)
    inside = torch.rand(N, 4, 2, H, W, generator=gen, dtype=torch.float64)  # the other coordinate on the map
    offsets = torch.where(torch.rand(N, 4, 1, H, W, generator=gen) < 0.5,
                          torch.stack([offsets[0], inside[:, :, 1]], dim=2),
                          torch.stack([inside[:, :, 0], offsets[1]], dim=2)).reshape(N, 8, H, W)
    for fn in (dw_ops.boundary_sample, reference.boundary_sample_dense):
        out, grad_boxes, grad_offsets = sample_and_grads(fn, boxes, offsets)
        assert (out == 0).all() and (grad_boxes == 0).all() and (grad_offsets == 0).all()
    finite = offsets.clamp(-1e3, 1e3)
    assert (reference.boundary_sample_deform_conv(boxes, finite) == 0).all()


def test_non_contiguous_inputs():
    boxes, offsets = make_sampling(2)
    boxes_cl = boxes.contiguous(memory_format=torch.channels_last)
    offsets_view = torch.cat([offsets, offsets], dim=3)[..., :offsets.shape[3]]
    assert not boxes_cl.is_contiguous() and not offsets_view.is_contiguous()
    got = sample_and_grads(dw_ops.boundary_sample, boxes_cl, offsets_view)
    want = sample_and_grads(dw_ops.boundary_sample, boxes, offsets)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_matches_float32(dtype, tol):
    boxes, offsets = make_sampling(3, shape=(2, 4, 8, 9), margin=0.8)
    boxes, offsets = boxes.to(dtype), offsets.to(dtype)
    got = sample_and_grads(dw_ops.boundary_sample, boxes, offsets)
    want = sample_and_grads(reference.boundary_sample_dense, boxes.float(), offsets.float())
    for a, b in zip(got, want):
        assert a.dtype == dtype
        assert_close(a.float(), b, rtol=tol, atol=tol * b.abs().max().item())


def test_empty_batch():
    boxes = torch.zeros(0, 4, 3, 3, requires_grad=True)
    offsets = torch.zeros(0, 8, 3, 3, requires_grad=True)
    out = dw_ops.boundary_sample(boxes, offsets)
    out.sum().backward()
    assert out.shape == boxes.shape and boxes.grad.shape == boxes.shape and offsets.grad.shape == offsets.shape


@pytest.mark.parametrize("seed", range(3))
def test_gradcheck(seed):
    boxes, offsets = make_sampling(seed, shape=(1, 4, 3, 4))
    assert torch.autograd.gradcheck(dw_ops.boundary_sample, (boxes.requires_grad_(), offsets.requires_grad_()))


def test_gradient_only_for_the_inputs_that_need_it_and_twice_with_retained_graph():
    boxes, offsets = make_sampling(1, shape=(1, 4, 3, 4))
    want_boxes, want_offsets = torch.autograd.grad(
        reference.boundary_sample_dense(boxes.requires_grad_(), offsets.requires_grad_()).sum(), (boxes, offsets))
    out = dw_ops.boundary_sample(boxes.detach(), offsets)
    out.sum().backward(retain_graph=True)
    out.sum().backward()
    assert_close(offsets.grad, 2 * want_offsets)
    boxes.grad = None
    dw_ops.boundary_sample(boxes, offsets.detach()).sum().backward()
    assert_close(boxes.grad, want_boxes)


def test_second_derivative_is_refused_not_silently_zero():
    boxes, offsets = make_sampling(2, shape=(1, 4, 3, 4))
    grad, = torch.autograd.grad(dw_ops.boundary_sample(boxes.requires_grad_(), offsets.requires_grad_()).sum(),
                                offsets, create_graph=True)
    with pytest.raises(RuntimeError, match="boundary_sample has no second derivative"):
        grad.sum().backward()


# ---- bad input ------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    boxes, offsets = make_sampling(0, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"boxes must have shape \(N, 4, H, W\)"):
        dw_ops.boundary_sample(boxes[:, :3], offsets)
    with pytest.raises(RuntimeError, match=r"boxes must have shape \(N, 4, H, W\)"):
        dw_ops.boundary_sample(boxes[0], offsets)
    with pytest.raises(RuntimeError, match=r"offsets must have shape \(N, 8, H, W\)"):
        dw_ops.boundary_sample(boxes, offsets[:, :7])
    with pytest.raises(RuntimeError, match=r"offsets must have shape \(N, 8, H, W\) matching boxes \(2, 4, 5, 6\)"):
        dw_ops.boundary_sample(boxes, offsets[:1])
    with pytest.raises(RuntimeError, match=r"offsets must have shape \(N, 8, H, W\) matching boxes"):
        dw_ops.boundary_sample(boxes, offsets[..., 1:])
    with pytest.raises(RuntimeError, match="offsets must have the dtype of boxes"):
        dw_ops.boundary_sample(boxes, offsets.double())
    with pytest.raises(RuntimeError, match="boxes must be float16, bfloat16, float32 or float64, got Int"):
        dw_ops.boundary_sample(boxes.int(), offsets.int())
