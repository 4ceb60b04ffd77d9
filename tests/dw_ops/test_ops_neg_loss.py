"""neg_loss against the dense reference: values, gradients, layouts, 16-bit inputs, gradcheck."""
import pytest
import torch
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

import dw_ops
from dw_ops import reference
from ops_problems import dense_entry_weight, make_logits

# (gamma, gamma_in, base_weight)
GAMMAS = [(2.0, 2.0, 1.0), (2.0, 1.5, 0.7), (1.5, 2.5, 0.3), (2.0, 0.0, 1.0)]


def fused_and_grads(cls, ctr, index, weight, gamma=2.0, gamma_in=None, base_weight=1.0, grad_out=1.3):
    cls, ctr = cls.detach().requires_grad_(), ctr.detach().requires_grad_()
    loss = dw_ops.neg_loss(cls, ctr, index, weight, gamma=gamma, gamma_in=gamma_in, base_weight=base_weight)
    loss.backward(torch.tensor(grad_out, dtype=loss.dtype))
    return loss.detach(), cls.grad, ctr.grad


def reference_and_grads(cls, ctr, index, weight, gamma=2.0, gamma_in=None, base_weight=1.0, grad_out=1.3):
    cls, ctr = cls.detach().requires_grad_(), ctr.detach().requires_grad_()
    gamma_in = gamma if gamma_in is None else gamma_in
    w = dense_entry_weight(cls.shape, index, weight.to(cls.dtype), base_weight)
    g = dense_entry_weight(cls.shape, index, torch.full_like(weight, gamma_in).to(cls.dtype), gamma)
    loss = reference.neg_loss_dense(cls, ctr, w, g)
    loss.backward(torch.tensor(grad_out, dtype=loss.dtype))
    return loss.detach(), cls.grad, ctr.grad


@pytest.mark.parametrize("gammas", GAMMAS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_dense_reference(gammas, dtype):
    gamma, gamma_in, base = gammas
    for seed in range(2):
        cls, ctr, index, weight = make_logits(seed, dtype=dtype)
        got = fused_and_grads(cls, ctr, index, weight, gamma, gamma_in, base)
        want = reference_and_grads(cls, ctr, index, weight, gamma, gamma_in, base)
        for a, b in zip(got, want):
            assert_close(a, b)


def test_many_entries_sharing_points_across_the_parallel_chunks():
    # The CPU pass over the entries splits them into one chunk per thread (at least 1024 entries
    # each), and each chunk must take whole points: all the entries of a point add to its one
    # centerness gradient. Here every point has its 5 classes listed, and 7003 entries split
    # into 2 to 6 chunks cut some point's run each time.
    cls, ctr, _, _ = make_logits(5, shape=(2, 900, 5))
    index = torch.arange(7003)
    weight = torch.rand(7003, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = fused_and_grads(cls, ctr, index, weight, 2.0, 1.5, 0.7)
    want = reference_and_grads(cls, ctr, index, weight, 2.0, 1.5, 0.7)
    for a, b in zip(got, want):
        assert_close(a, b)


def test_default_weights_are_the_focal_negative_term():
    cls, ctr, _, _ = make_logits(0)
    assert_close(dw_ops.neg_loss(cls, ctr), reference.neg_loss_dense(cls, ctr, torch.ones_like(cls)))


def test_saturated_logits_clamp_the_log_like_bce():
    cls, ctr, index, weight = make_logits(1)
    cls[0, :4] = 40.0  # s rounds to 1: BCE's log is clamped at -100
    ctr[0, :4] = 40.0
    cls[1, :4] = -60.0
    got = fused_and_grads(cls, ctr, index, weight)
    want = reference_and_grads(cls, ctr, index, weight)
    assert got[0] > 100
    for a, b in zip(got, want):
        assert_close(a, b)


def test_float32_scores_across_the_range_match_to_a_few_ulp():
    # The CPU kernel computes log1p with its own SIMD log (csrc/cpu/vec_math.h), four vectors at
    # a time, then one vector, then scalars: P = 203 takes all three paths. With sigmoid(ctr) = 1,
    # s = sigmoid(cls) runs from 1e-6 to 0.99; no absolute tolerance hides the small gradients.
    probs = torch.logspace(-6, 0, 203 * 3, dtype=torch.float64).clamp(max=0.99)
    cls = torch.logit(probs).view(1, 203, 3).to(torch.float32)
    ctr = torch.full((1, 203), 40.0)
    index, weight = torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    got = fused_and_grads(cls, ctr, index, weight)
    want = reference_and_grads(cls, ctr, index, weight)
    assert_close(got[0], want[0], rtol=2e-6, atol=0)
    assert_close(got[1], want[1], rtol=5e-6, atol=0)
    assert_close(dw_ops.neg_loss(cls, ctr), got[0])  # the pass without gradients


def test_non_contiguous_logits():
    cls, ctr, index, weight = make_logits(2)
    cls_view = cls.transpose(1, 2).contiguous().transpose(1, 2)  # (N, P, C) view of an (N, C, P) tensor
    ctr_view = torch.stack([ctr, ctr], dim=-1)[..., 0]
    assert not cls_view.is_contiguous() and not ctr_view.is_contiguous()
    got = fused_and_grads(cls_view, ctr_view, index, weight, 2.0, 1.5, 0.5)
    want = fused_and_grads(cls, ctr, index, weight, 2.0, 1.5, 0.5)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=1e-12, atol=1e-12)
    sliced = torch.randn(2, 60, 7, dtype=torch.float64)[:, ::2, 1:6]  # not dense in memory
    got = fused_and_grads(sliced, ctr, index, weight)
    want = reference_and_grads(sliced, ctr, index, weight)
    for a, b in zip(got, want):
        assert_close(a, b)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_matches_float32(dtype, tol):
    cls, ctr, index, weight = make_logits(3, shape=(2, 50, 8), num_entries=60)
    cls, ctr = cls.to(dtype), ctr.to(dtype)
    loss, grad_cls, grad_ctr = fused_and_grads(cls, ctr, index, weight.float(), 2.0, 1.5, 0.8)
    assert loss.dtype == torch.float32 and grad_cls.dtype == dtype and grad_ctr.dtype == dtype
    want = reference_and_grads(cls.float(), ctr.float(), index, weight.float(), 2.0, 1.5, 0.8)
    assert_close(loss, want[0], rtol=1e-5, atol=1e-5)  # 16-bit inputs, float32 math
    for got, ref in zip((grad_cls, grad_ctr), want[1:]):
        assert_close(got.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())


class RecordDtypes(TorchDispatchMode):
    """Records the dtypes of the tensor arguments each dw_ops operator receives."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "dw_ops":
            self.calls.append((func.__name__, [a.dtype for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def test_runs_in_float32_under_autocast():
    cls, ctr, index, weight = make_logits(5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16), RecordDtypes() as record:
        got = fused_and_grads(cls, ctr, index, weight.float())
    assert record.calls[0] == ("neg_loss.default", [torch.float32, torch.float32, torch.int64, torch.float32])
    want = fused_and_grads(cls.float(), ctr.float(), index, weight.float())
    for a, b in zip(got, want):
        assert_close(a.float(), b, rtol=1.6e-2, atol=1e-2 * b.abs().max().item())


def test_empty_batch():
    cls = torch.zeros(0, 7, 3, requires_grad=True)
    ctr = torch.zeros(0, 7, requires_grad=True)
    loss = dw_ops.neg_loss(cls, ctr)
    loss.backward()
    assert loss.item() == 0.0 and cls.grad.shape == cls.shape and ctr.grad.shape == ctr.shape


def test_nan_logits_give_nan():
    cls, ctr, index, weight = make_logits(4)
    cls[1, 3, 2] = float("nan")
    assert dw_ops.neg_loss(cls, ctr, index, weight).isnan()
    ctr[0, 0] = float("nan")
    assert dw_ops.neg_loss(cls, ctr).isnan()


@pytest.mark.parametrize("gammas", GAMMAS, ids=str)
@pytest.mark.parametrize("seed", range(3))
def test_gradcheck(seed, gammas):
    gamma, gamma_in, base = gammas
    cls, ctr, index, weight = make_logits(seed, shape=(2, 6, 3), num_entries=10)

    def loss(cls, ctr):
        return dw_ops.neg_loss(cls, ctr, index, weight, gamma=gamma, gamma_in=gamma_in, base_weight=base)

    assert torch.autograd.gradcheck(loss, (cls.requires_grad_(), ctr.requires_grad_()))


# ---- bad input ------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    cls, ctr, index, weight = make_logits(0, dtype=torch.float32)
    weight = weight.float()
    with pytest.raises(RuntimeError, match=r"cls_logits must have shape \(N, P, C\)"):
        dw_ops.neg_loss(cls[0], ctr)
    with pytest.raises(RuntimeError, match=r"ctr_logits must have shape \(N, P\) matching cls_logits"):
        dw_ops.neg_loss(cls, ctr[:1])
    with pytest.raises(RuntimeError, match=r"ctr_logits must have shape \(N, P\) matching cls_logits"):
        dw_ops.neg_loss(cls, ctr[:, 1:])
    with pytest.raises(RuntimeError, match="ctr_logits must have the dtype of cls_logits"):
        dw_ops.neg_loss(cls, ctr.double())
    with pytest.raises(RuntimeError, match="cls_logits must be float16, bfloat16, float32 or float64, got Long"):
        dw_ops.neg_loss(cls.long(), ctr.long())
    with pytest.raises(RuntimeError, match="entry_index must be int64"):
        dw_ops.neg_loss(cls, ctr, index.int(), weight)
    with pytest.raises(RuntimeError, match="entry_weight must be float32 or float64"):
        dw_ops.neg_loss(cls, ctr, index, weight.half())
    with pytest.raises(RuntimeError, match=r"entry_weight must have one value per entry_index \(40\), got 39"):
        dw_ops.neg_loss(cls, ctr, index, weight[1:])
    with pytest.raises(RuntimeError, match=r"entry_index must index flat \(N \* P \* C\) entries of cls_logits"):
        dw_ops.neg_loss(cls, ctr, index + cls.numel(), weight)
    with pytest.raises(ValueError, match="entry_weight is required"):
        dw_ops.neg_loss(cls, ctr, index)
    with pytest.raises(ValueError, match="entry_weight is treated as a constant"):
        dw_ops.neg_loss(cls, ctr, index, weight.requires_grad_())


def test_repeated_entries_are_refused():
    cls, ctr = torch.randn(1, 3, 2), torch.randn(1, 3)
    with pytest.raises(RuntimeError, match="strictly increasing"):
        dw_ops.neg_loss(cls, ctr, torch.tensor([3, 3]), torch.tensor([0.5, 0.5]))


class RecordLargeAllocations(TorchDispatchMode):
    """Records the ops that return a tensor with at least ``numel`` elements."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.ops = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() >= self.numel and func.overloadpacket not in VIEW_OPS:
                self.ops.append(func.__name__)
        return out


VIEW_OPS = {torch.ops.aten.transpose, torch.ops.aten.detach, torch.ops.aten.view, torch.ops.aten.t}


def test_backward_makes_one_gradient_buffer_and_can_run_twice():
    cls, ctr, index, weight = make_logits(5, dtype=torch.float32)
    cls, ctr = cls.detach().requires_grad_(), ctr.detach().requires_grad_()
    loss = dw_ops.neg_loss(cls, ctr, index, weight)
    with RecordLargeAllocations(cls.numel()) as record:
        loss.backward(torch.tensor(2.0), retain_graph=True)
    # one scaled gradient (the rest is the leaf's own .grad layout), no zeros for the unused
    # gradient outputs
    assert record.ops.count("mul.Tensor") == 1 and not any("zero" in op for op in record.ops), record.ops
    first = cls.grad.clone()
    cls.grad = None
    loss.backward(torch.tensor(2.0))  # the saved gradient was not modified by the first backward
    assert_close(cls.grad, first, rtol=0, atol=0)
