"""Property-based tests: every dw_ops operator against its dense reference on random shapes.

Hypothesis draws the FPN levels, GT boxes (degenerate, outside the image, 1e5-pixel huge, a
thousand per image), distances, logits, offsets (+-1e4 cells, exactly on the -1 / H / W borders)
and the dtype; values and gradients must match ``dw_ops.reference``. The last section checks the
int64 index math above 2^31 without allocating 2^31 elements on the CPU.
"""
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.testing import assert_close

import dw_ops
from dw_ops import reference
from ops_problems import Problem, at_pairs, dense_entry_weight, fused_assignment, make_points

PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([torch.float32, torch.float64])
# Float32 runs the same formulas in another order than the dense reference: relative tolerances
# above float32's rounding, absolute ones that cover the exp(5 t) of the positive weights.
TOLERANCE = {torch.float32: {"rtol": 1e-4, "atol": 1e-5}, torch.float64: {}}
ASSIGNMENT_MODES = st.sampled_from([
    {},
    {"hard_prior": True},
    {"pos_mode": "paper", "neg_mode": "paper", "gamma1": 1.5},
    {"pos_mode": "paper", "mu": 4.0, "mu_den": 2.0, "sigma": 2.0},
])

# ---- strategies ---------------------------------------------------------------------------------

# (rows, cols, stride) of one FPN level; strides need not be powers of two.
levels = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6), st.sampled_from([4.0, 8.0, 12.5, 16.0, 64.0])),
                  min_size=1, max_size=3)
# GT boxes (x1, y1, x2, y2): half of them ordinary boxes over the first ~100 pixels, the others
# degenerate (zero or negative width / height), outside the image, or 1e5-pixel huge.
ordinary_box = st.builds(lambda x, y, w, h: [x, y, x + w, y + h], st.floats(-10, 90), st.floats(-10, 90),
                         st.floats(2, 100), st.floats(2, 100))
degenerate_box = st.builds(lambda x, y, w, h: [x, y, x + w, y + h], st.floats(-10, 90), st.floats(-10, 90),
                           st.sampled_from([0.0, -7.0]), st.floats(-50, 100))
outside_box = st.builds(lambda x, y, w: [x, y, x + w, y + w], st.sampled_from([-1e5, -200.0, 1e4]),
                        st.floats(-10, 90), st.floats(2, 150))
huge_box = st.builds(lambda x, y, w: [x, y, x + w, y + w], st.floats(-1e5, 0), st.floats(-1e5, 0),
                     st.sampled_from([1e5, 2e5]))
box = st.one_of(ordinary_box, st.one_of(degenerate_box, outside_box, huge_box))


@st.composite
def problems(draw, max_gts=6, max_images=3, image_levels=levels):
    """A random batch: points of random levels, 0..max_gts random GTs per image (an image may have
    none, the batch may be empty), distances of random scale, random logits."""
    dtype = draw(DTYPES)
    points, strides = make_points(draw(image_levels), dtype)
    num_images = draw(st.sampled_from(range(1, max_images + 1)) | st.just(0))  # 0: an empty batch
    num_classes = draw(st.integers(1, 4))
    num_gts = [draw(st.sampled_from(range(max_gts + 1))) for _ in range(num_images)]  # uniform: few empty images
    gt_boxes = [torch.tensor(draw(st.lists(box, min_size=g, max_size=g)), dtype=dtype).reshape(-1, 4)
                for g in num_gts]
    gt_labels = [torch.tensor(draw(st.lists(st.integers(0, num_classes - 1), min_size=len(b), max_size=len(b))),
                              dtype=torch.long) for b in gt_boxes]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 32 - 1)))
    scale = draw(st.sampled_from([1.0, 40.0, 1e5]))
    distances = scale * torch.rand(num_images, len(points), 4, generator=gen, dtype=dtype)
    logit_scale = draw(st.sampled_from([1.0, 8.0]))
    cls_logits = logit_scale * torch.randn(num_images, len(points), num_classes, generator=gen, dtype=dtype)
    ctr_logits = logit_scale * torch.randn(num_images, len(points), generator=gen, dtype=dtype)
    return Problem(points, strides, distances, cls_logits, ctr_logits, gt_boxes, gt_labels)


def bag_values(pb, ref_bags, values):
    """at_pairs, also for a batch of no image."""
    return at_pairs(ref_bags, values) if ref_bags else pb.distances.new_zeros(0)


def assignment_with_grads(pb, fused, **kwargs):
    """neg_loss + a random weighting of the GIoU losses, and its gradients w.r.t. distances and
    logits, fused or dense."""
    leaves = [t.detach().clone().requires_grad_() for t in (pb.distances, pb.cls_logits, pb.ctr_logits)]
    pb = pb._replace(distances=leaves[0], cls_logits=leaves[1], ctr_logits=leaves[2])
    gen = torch.Generator().manual_seed(0)
    if fused:
        out = fused_assignment(pb, **kwargs)
        giou_loss = out.bag.giou_loss
    else:
        out = reference.assign_and_neg_loss_dense(pb.points, pb.strides, pb.distances, pb.cls_logits, pb.ctr_logits,
                                                  pb.gt_boxes, pb.gt_labels, **kwargs)
        giou_loss = bag_values(pb, out.bags, [b.giou_loss for b in out.bags])
    pair_weight = torch.rand(giou_loss.shape, generator=gen, dtype=torch.float64).to(giou_loss.dtype)
    (out.neg_loss + (giou_loss * pair_weight).sum()).backward()
    return out, [t.grad for t in leaves]


def record_coverage(pb, bag):
    """Hypothesis events (pytest --hypothesis-show-statistics): how often the drawn batches have bag
    pairs at all, and pairs of a 1e5-pixel GT."""
    boxes = torch.cat([pb.distances.new_zeros(0, 4), *pb.gt_boxes])
    huge = (boxes[:, 2:] - boxes[:, :2] >= 1e5).any(dim=1)
    event(f"{len(pb.gt_boxes)} images, {'some' if len(bag.gt_index) else 'no'} pairs, {pb.distances.dtype}")
    event("pairs of a 1e5-pixel GT" if (bag.gt_offsets.diff()[huge] > 0).any() else "no pair of a 1e5-pixel GT")


def check_assignment(pb, modes):
    tol = TOLERANCE[pb.distances.dtype]
    fused, fused_grads = assignment_with_grads(pb, True, **modes)
    record_coverage(pb, fused.bag)
    ref, ref_grads = assignment_with_grads(pb, False, **modes)
    ref_bag = [bag_values(pb, ref.bags, [getattr(b, name) for b in ref.bags])
               for name in ("prior", "iou", "giou_loss")]
    assert len(fused.bag.gt_index) == sum(int(b.inside.sum()) for b in ref.bags)
    for got, want in zip((fused.bag.prior, fused.bag.iou, fused.bag.giou_loss), ref_bag):
        assert_close(got, want.detach(), **tol)
    assert_close(fused.weights.pos_weight, bag_values(pb, ref.bags, ref.weights.pos_weight), **tol)
    p_neg = dense_entry_weight(pb.cls_logits.shape, fused.weights.neg_index, fused.weights.neg_prob)
    assert_close(p_neg, ref.weights.p_neg, **tol)
    assert_close(fused.weights.neg_normalizer, ref.weights.neg_normalizer, **tol)
    assert_close(fused.neg_loss, ref.neg_loss, **tol)
    for got, want in zip(fused_grads, ref_grads):
        assert_close(got, torch.zeros_like(got) if want is None else want, **tol)  # None: the batch has no image


# ---- assignment pipeline and neg_loss -------------------------------------------------------------

@settings(PROPERTY, max_examples=60)
@given(pb=problems(), modes=ASSIGNMENT_MODES)
def test_assignment_matches_dense_reference(pb, modes):
    check_assignment(pb, modes)


@settings(PROPERTY, max_examples=6)
@given(data=st.data(), modes=ASSIGNMENT_MODES)
def test_assignment_with_a_thousand_gts_in_one_image(data, modes):
    pb = data.draw(problems(max_gts=0, max_images=1, image_levels=st.just([(2, 3, 16.0), (1, 2, 32.0)])))
    num_gts = data.draw(st.integers(1000, 1200))
    # Boxes over the 48 x 32 image: most contain several of its 8 points, and two classes make many
    # GTs share each P_neg entry (merged by minimum).
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 32 - 1)))
    dtype = pb.distances.dtype
    xy = torch.rand(num_gts, 2, generator=gen, dtype=dtype) * torch.tensor([40.0, 24.0], dtype=dtype)
    wh = 2 + torch.rand(num_gts, 2, generator=gen, dtype=dtype) * 60
    gt_boxes = [torch.cat([xy, xy + wh], 1)]
    gt_labels = [torch.randint(2, (num_gts,), generator=gen)]
    num_points = len(pb.points)
    pb = pb._replace(gt_boxes=gt_boxes, gt_labels=gt_labels,
                     distances=40 * torch.rand(1, num_points, 4, generator=gen, dtype=dtype),
                     cls_logits=torch.randn(1, num_points, 2, generator=gen, dtype=dtype),
                     ctr_logits=torch.randn(1, num_points, generator=gen, dtype=dtype))
    check_assignment(pb, modes)


@settings(PROPERTY, max_examples=40)
@given(data=st.data(), dtype=DTYPES, shape=st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(1, 6)),
       gammas=st.tuples(st.sampled_from([2.0, 1.5, 0.0]), st.sampled_from([2.0, 2.5, 0.0]), st.floats(0, 1)),
       class_major=st.booleans())
def test_neg_loss_matches_dense_reference(data, dtype, shape, gammas, class_major):
    """Any entry subset and weights, both memory layouts, saturating logits (|x| up to 60)."""
    total = torch.Size(shape).numel()
    index = torch.tensor(sorted(data.draw(st.sets(st.integers(0, max(total - 1, 0)), max_size=min(total, 30)))),
                         dtype=torch.long)
    weight = torch.tensor(data.draw(st.lists(st.floats(0, 1), min_size=len(index), max_size=len(index))),
                          dtype=torch.float64)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 32 - 1)))
    scale = data.draw(st.sampled_from([1.0, 60.0]))
    n, p, c = shape
    cls = scale * torch.randn((n, c, p) if class_major else shape, generator=gen, dtype=dtype)
    cls = cls.transpose(1, 2) if class_major else cls
    ctr = scale * torch.randn(n, p, generator=gen, dtype=dtype)
    gamma, gamma_in, base = gammas
    results = []
    for fused in (True, False):
        x, c_ = cls.detach().clone().requires_grad_(), ctr.detach().clone().requires_grad_()
        if fused:
            loss = dw_ops.neg_loss(x, c_, index, weight, gamma=gamma, gamma_in=gamma_in, base_weight=base)
        else:
            w = dense_entry_weight(shape, index, weight.to(dtype), base)
            g = dense_entry_weight(shape, index, torch.full((len(index),), gamma_in, dtype=dtype), gamma)
            loss = reference.neg_loss_dense(x, c_, w, g)
        loss.backward()
        results.append((loss.detach(), x.grad, c_.grad))
    for got, want in zip(*results):
        assert_close(got, want, **TOLERANCE[dtype])


# ---- boundary_sample --------------------------------------------------------------------------------

@st.composite
def samplings(draw):
    """Box map and offsets: each sample point either anywhere on or near the map (fractional),
    exactly on a cell, exactly on the -1 / H / W borders, or +-1e4 cells away."""
    dtype = draw(DTYPES)
    n, h, w = draw(st.integers(0, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 32 - 1)))
    boxes = 50 * torch.rand(n, 4, h, w, generator=gen, dtype=torch.float64)
    coords = []
    for size, grid in ((h, torch.arange(h).view(h, 1)), (w, torch.arange(w).view(1, w))):
        kinds = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=n * 4 * h * w, max_size=n * 4 * h * w)),
                             dtype=torch.long).view(n, 4, h, w)
        near = -1.5 + (size + 2) * torch.rand(n, 4, h, w, generator=gen, dtype=torch.float64)
        cell = torch.randint(-1, size + 1, (n, 4, h, w), generator=gen).double()  # -1 and size are the borders
        border = torch.where(torch.rand(n, 4, h, w, generator=gen) < 0.5, -1.0, float(size))
        far = torch.where(torch.rand(n, 4, h, w, generator=gen) < 0.5, -1e4, 1e4)
        coord = torch.stack([near, cell, border, far]).gather(0, kinds.unsqueeze(0)).squeeze(0)
        coords.append(coord - grid)  # offsets relative to the cell
    offsets = torch.stack(coords, dim=2).reshape(n, 8, h, w)  # channels (2c, 2c + 1) = (dy, dx)
    return boxes.to(dtype), offsets.to(dtype)


def sample_with_grads(fn, boxes, offsets):
    boxes, offsets = boxes.detach().clone().requires_grad_(), offsets.detach().clone().requires_grad_()
    out = fn(boxes, offsets)
    grad_out = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view(out.shape)
    out.backward(grad_out)
    return out.detach(), boxes.grad, offsets.grad


def on_minus_one_border(offsets):
    """(N, 8, H, W) mask of the offset pairs whose sample point has y == -1 or x == -1 exactly."""
    n, _, h, w = offsets.shape
    ys = offsets[:, 0::2] + torch.arange(h, dtype=offsets.dtype).view(h, 1)
    xs = offsets[:, 1::2] + torch.arange(w, dtype=offsets.dtype).view(1, w)
    return ((ys == -1) | (xs == -1)).repeat_interleave(2, dim=1)


@settings(PROPERTY, max_examples=60)
@given(sampling=samplings(), ref=st.sampled_from(["dense", "deform_conv2d"]))
def test_boundary_sample_matches_references(sampling, ref):
    boxes, offsets = sampling
    out, grad_boxes, grad_offsets = sample_with_grads(dw_ops.boundary_sample, boxes, offsets)
    fn = reference.boundary_sample_dense if ref == "dense" else reference.boundary_sample_deform_conv
    want_out, want_grad_boxes, want_grad_offsets = sample_with_grads(fn, boxes, offsets)
    tol = TOLERANCE[boxes.dtype]
    assert_close(out, want_out, **tol)
    assert_close(grad_boxes, want_grad_boxes, **tol)
    if ref == "deform_conv2d":
        # On y == -1 or x == -1 exactly, torchvision's forward gives 0 but its offset backward
        # returns the one-sided slope from inside the map; dw_ops (and the dense reference) give 0,
        # the derivative of the zero plateau the forward is on.
        border = on_minus_one_border(offsets)
        assert (grad_offsets[border] == 0).all()
        want_grad_offsets = torch.where(border, 0, want_grad_offsets)
    assert_close(grad_offsets, want_grad_offsets, **tol)


# ---- int64 index math ------------------------------------------------------------------------------

@settings(PROPERTY, max_examples=50)
@given(data=st.data(), num_images=st.integers(1, 64), num_points=st.integers(1, 2 ** 24),
       num_classes=st.integers(1, 2 ** 14))
def test_entry_index_math_is_exact_beyond_int32(data, num_images, num_points, num_classes):
    """``pair_entry_index`` and ``merge_entries`` on a hand-built BagPairs whose (N, P, C) score
    matrix has up to 2^44 entries: the flat indices ``(n * P + p) * C + k`` equal Python's integer
    math (no int32 wrap, no float rounding), even with int32 labels, and merge to the minimum.

    Covers the Python side of the entry indices (the ones the fused assignment hands to neg_loss).
    The C++ kernels' decoding of such indices is covered by
    ``test_neg_loss_closed_form_with_entries_past_int32`` on a GPU with enough memory."""
    pairs = st.tuples(st.integers(0, num_images - 1), st.integers(0, num_points - 1), st.integers(0, num_classes - 1))
    drawn = data.draw(st.lists(pairs, min_size=1, max_size=20))
    image, point, label = (list(col) for col in zip(*drawn))
    gt = torch.arange(len(drawn))
    zeros = torch.zeros(len(drawn), dtype=torch.float64)
    bag = dw_ops.BagPairs(gt, torch.tensor(point), torch.tensor(image), torch.arange(len(drawn) + 1),
                          torch.tensor(image), zeros, zeros, zeros)
    entry = dw_ops.pair_entry_index(bag, torch.tensor(label, dtype=torch.int32), num_points, num_classes)
    expected = [(n * num_points + p) * num_classes + k for n, p, k in drawn]
    assert entry.dtype == torch.int64 and entry.tolist() == expected
    value = torch.tensor(data.draw(st.lists(st.floats(0, 1), min_size=len(drawn), max_size=len(drawn))),
                         dtype=torch.float64)
    unique, merged = dw_ops.merge_entries(entry, value)
    minimum = {}
    for e, v in zip(expected, value.tolist()):
        minimum[e] = min(minimum.get(e, v), v)
    assert unique.tolist() == sorted(minimum) and merged.tolist() == [minimum[e] for e in sorted(minimum)]


def test_neg_loss_reads_entry_indices_as_int64():
    """2^32 + 1 wraps to 1 in int32, a valid entry of a 2 x 3 x 4 matrix: it must be rejected with
    its int64 value in the message."""
    cls, ctr = torch.zeros(2, 3, 4), torch.zeros(2, 3)
    for bad in (2 ** 32 + 1, 2 ** 31, -(2 ** 32) + 1):
        with pytest.raises(RuntimeError, match=f"entry_index must index .* got values in \\[{bad}, {bad}\\]"):
            dw_ops.neg_loss(cls, ctr, torch.tensor([bad]), torch.ones(1))


def test_shapes_past_int32_under_fake_tensors():
    """The fake kernels (torch.compile's view of the ops) keep sizes past 2^31 elements and the
    class-major gradient layout; no memory is allocated. Only shapes are checked here."""
    n, p, c = 2, 2 ** 20, 1100  # 2.3e9 scores
    with FakeTensorMode():
        cls = torch.empty(n, c, p).transpose(1, 2).requires_grad_()
        ctr = torch.empty(n, p, requires_grad=True)
        index = torch.empty(5, dtype=torch.long)
        loss = dw_ops.neg_loss(cls, ctr, index, torch.empty(5))
        loss.backward()
        assert loss.shape == () and cls.grad.shape == (n, p, c) and cls.grad.stride() == (p * c, 1, p)
        assert ctr.grad.shape == (n, p)
        boxes = torch.empty(1, 4, 2 ** 16, 2 ** 14, requires_grad=True)  # 4.3e9 samples
        offsets = torch.empty(1, 8, 2 ** 16, 2 ** 14, requires_grad=True)
        dw_ops.boundary_sample(boxes, offsets).sum().backward()
        assert boxes.grad.shape == boxes.shape and offsets.grad.shape == offsets.shape


def neg_term(s: float, gamma: float) -> float:
    """s^gamma * BCE(s, 0), BCE's log clamped at -100."""
    return s ** gamma * min(-math.log1p(-s), 100.0)


def neg_term_grad(s: float, gamma: float) -> float:
    """d neg_term / d s."""
    return gamma * s ** (gamma - 1) * -math.log1p(-s) + s ** gamma / (1 - s)


@pytest.mark.parametrize("device, shape", [
    ("cpu", (2, 300, 7)),
    # 2 * 2^20 * 1025 = 2^31 + 2^21 scores (8.6 GB per float32 copy, three copies): the kernels'
    # flat offsets (n * C + k) * P + p and the entry decoding idx / (P * C), idx / C % P, idx % C pass 2^31.
    pytest.param("cuda", (2, 2 ** 20, 1025), marks=pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.mem_get_info()[0] < 40 * 2 ** 30,
        reason="needs a GPU with 40 GB free")),
])
def test_neg_loss_closed_form_with_entries_past_int32(device, shape):
    """Constant logits make every score's term the same, so the loss and gradients have a closed
    form; the listed entries sit at the end of the flat index range (past 2^31 on the large shape)
    and must land on the right class and point. The CPU case checks the test itself at a small size."""
    n, p, c = shape
    x, y = -1.5, 0.5
    cls = torch.full((n, c, p), x, device=device).transpose(1, 2).requires_grad_()  # class-major: no copy
    ctr = torch.full((n, p), y, device=device, requires_grad=True)
    total = n * p * c
    index = torch.tensor([total - 1 - 3 * c, total - 2, total - 1], device=device)  # 3 entries, 2 points
    weight = [0.25, 0.5, 0.75]
    gamma, gamma_in = 2.0, 1.0
    loss = dw_ops.neg_loss(cls, ctr, index, torch.tensor(weight, dtype=torch.float64, device=device),
                           gamma=gamma, gamma_in=gamma_in)
    loss.backward()
    sx, sc = 1 / (1 + math.exp(-x)), 1 / (1 + math.exp(-y))
    s = sx * sc
    assert_close(loss.item(), (total - 3) * neg_term(s, gamma) + sum(weight) * neg_term(s, gamma_in), rtol=1e-5, atol=0)

    def grads_at(grad, flat, shape_):  # gather without reshaping the (non-contiguous) gradient
        return grad[torch.unravel_index(torch.tensor(flat, device=device), shape_)].double().cpu()

    d_out = neg_term_grad(s, gamma)
    d_in = [w * neg_term_grad(s, gamma_in) for w in weight]
    dsx = sc * sx * (1 - sx)  # d s / d cls
    assert_close(grads_at(cls.grad, index.tolist(), shape), torch.tensor(d_in, dtype=torch.float64) * dsx,
                 rtol=1e-4, atol=0)
    assert_close(grads_at(cls.grad, [0, total // 2, total - 3], shape),
                 torch.full((3,), d_out * dsx, dtype=torch.float64), rtol=1e-4, atol=0)
    # Point rows: the last point holds entries 2 and 3, the one 3 points before it entry 1, the first none.
    per_point = [d_in[1] + d_in[2] + (c - 2) * d_out, d_in[0] + (c - 1) * d_out, c * d_out]
    assert_close(grads_at(ctr.grad, [n * p - 1, n * p - 4, 0], (n, p)),
                 torch.tensor(per_point, dtype=torch.float64) * sx * sc * (1 - sc), rtol=1e-4, atol=0)
