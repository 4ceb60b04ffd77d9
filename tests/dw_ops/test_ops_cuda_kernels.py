"""CUDA kernels of dw_ops against the CPU kernels (whose math they share, so the comparison checks the
launch and indexing logic): sizes that cross the block and grid limits, long and empty GT bags,
strided and 16-bit inputs, NaN propagation through the block reductions, empty inputs, and
run-to-run determinism. The CPU kernels are checked against the dense references elsewhere."""
import contextlib

import pytest
import torch

import dw_ops

DEVICE = "cuda"
ops = torch.ops.dw_ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# (rtol, atol) per dtype: the device's exp/log1p/pow differ from the host's by an ulp or two, and
# the sums run in another order.
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 1e-6), torch.float16: (2e-3, 1e-4),
       torch.bfloat16: (1.6e-2, 1e-3)}


def assert_close(actual, expected, dtype=None):
    rtol, atol = TOL[dtype or expected.dtype]
    torch.testing.assert_close(actual.cpu(), expected, rtol=rtol, atol=atol, equal_nan=True)


@contextlib.contextmanager
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# ---- candidate bags -------------------------------------------------------------------------------

def _points(size=64, strides=(2, 4)):
    points, point_strides = [], []
    for s in strides:
        ys, xs = torch.meshgrid(torch.arange(0, size, s), torch.arange(0, size, s), indexing="ij")
        points.append(torch.stack([xs, ys], -1).reshape(-1, 2) + s / 2)
        point_strides.append(torch.full((points[-1].shape[0],), float(s)))
    return torch.cat(points).double(), torch.cat(point_strides).double()


def _bag_inputs(dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    points, strides = _points()
    distances = (torch.rand(3, len(points), 4, generator=g, dtype=torch.float64) * 20 + 0.5).to(dtype)
    corners = torch.rand(6, 2, 2, generator=g, dtype=torch.float64).sort(dim=1).values * 60  # (x1, y1), (x2, y2)
    gt_boxes = [
        # ~1100 pairs: a bag several times longer than a block; a box whose edges sit on points; a
        # box with no point inside (an empty bag).
        torch.tensor([[2.0, 2.0, 62.0, 62.0], [3.0, 5.0, 21.0, 33.0], [10.1, 10.1, 10.2, 10.2]], dtype=torch.float64),
        torch.zeros(0, 4, dtype=torch.float64),  # an image without GTs
        corners.reshape(6, 4),
    ]
    return points.to(device, dtype), strides.to(device, dtype), distances.to(device), _to(gt_boxes, device, dtype)


def _to(tensors, device, dtype=None):
    return [t.to(device, dtype or t.dtype) for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard_prior", [False, True])
def test_candidate_bag_iou_matches_cpu(dtype, hard_prior):
    results = {}
    for device in ("cpu", DEVICE):
        points, strides, distances, gt_boxes = _bag_inputs(dtype, device)
        distances.requires_grad_()
        bag = dw_ops.candidate_bag_iou(points, strides, distances, gt_boxes, hard_prior=hard_prior)
        bag.giou_loss.pow(2).sum().backward()  # an upstream gradient that differs per pair
        results[device] = (bag, distances.grad)
    (bag_cpu, grad_cpu), (bag_gpu, grad_gpu) = results["cpu"], results[DEVICE]
    assert int(bag_cpu.gt_offsets.diff().max()) > 4 * 256  # the long bag spans several block strides
    assert int((bag_cpu.gt_offsets.diff() == 0).sum()) >= 1  # and one bag is empty
    for name in ("gt_index", "point_index", "image_index", "gt_offsets"):
        assert torch.equal(getattr(bag_gpu, name).cpu(), getattr(bag_cpu, name)), name
    for name in ("prior", "iou", "giou_loss"):
        assert_close(getattr(bag_gpu, name).detach(), getattr(bag_cpu, name).detach())
    assert_close(grad_gpu, grad_cpu)


def test_bag_pairs_beyond_the_grid_cap():
    # M * P = 300 * 65536 mask elements: more than 65535 blocks of 256 threads, so the grid-stride
    # loop runs more than once per thread.
    g = torch.Generator().manual_seed(1)
    points, _ = _points(size=256, strides=(1,))
    corners = torch.rand(300, 2, generator=g, dtype=torch.float64) * 250
    boxes = torch.cat([corners, corners + torch.rand(300, 2, generator=g, dtype=torch.float64) * 6], 1).float()
    expected = ops.bag_pairs(points.float(), boxes)
    actual = ops.bag_pairs(points.float().to(DEVICE), boxes.to(DEVICE))
    for a, e in zip(actual, expected):
        assert torch.equal(a.cpu(), e)


def test_bag_iou_beyond_the_grid_cap():
    # 17 M pairs: more than 65535 blocks of 256 threads.
    g = torch.Generator().manual_seed(4)
    points, strides = _points(size=64, strides=(2,))
    P, M, K = len(points), 40, 17_000_000
    corners = torch.rand(M, 2, generator=g, dtype=torch.float64) * 50
    gt_boxes = torch.cat([corners, corners + 14], 1)
    distances = torch.rand(2, P, 4, generator=g, dtype=torch.float64) * 20 + 0.5
    gt_image = torch.randint(0, 2, (M,), generator=g)
    pair_gt, pair_point = torch.randint(0, M, (K,), generator=g), torch.randint(0, P, (K,), generator=g)
    args = (points.float(), strides.float(), distances.float(), gt_boxes.float(), gt_image, pair_gt, pair_point)
    expected = ops.bag_iou(*args, 1.11, False)
    actual = ops.bag_iou(*_to(args, DEVICE), 1.11, False)
    for a, e in zip(actual, expected):
        assert_close(a, e)
    grad = torch.rand(K, generator=g)
    expected = ops._bag_iou_backward(grad, *args[:1], *args[2:])
    actual = ops._bag_iou_backward(*_to((grad, *args[:1], *args[2:]), DEVICE))
    assert_close(actual, expected)


def test_ops_on_a_side_stream_wait_for_their_inputs():
    # The kernels run on the current stream: inputs made by a long chain on a side stream are
    # ready when the op's kernels read them there.
    cls, ctr, index, weight = _neg_loss_inputs(torch.float32)
    expected = dw_ops.neg_loss(cls, ctr, index, weight)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        c = cls.to(DEVICE)
        for _ in range(50):  # keep the side stream busy
            c = c * 1.0
        actual = dw_ops.neg_loss(c, ctr.to(DEVICE), index.to(DEVICE), weight.to(DEVICE))
    stream.synchronize()
    assert_close(actual, expected)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ops_run_on_the_inputs_device():
    points, strides, distances, gt_boxes = _bag_inputs(torch.float32, "cuda:1")
    distances.requires_grad_()
    bag = dw_ops.candidate_bag_iou(points, strides, distances, gt_boxes)
    bag.giou_loss.sum().backward()
    assert bag.giou_loss.device == distances.grad.device == torch.device("cuda:1")
    cpu_points, cpu_strides, cpu_distances, cpu_boxes = _bag_inputs(torch.float32)
    cpu_distances.requires_grad_()
    expected = dw_ops.candidate_bag_iou(cpu_points, cpu_strides, cpu_distances, cpu_boxes)
    expected.giou_loss.sum().backward()
    assert_close(bag.giou_loss.detach(), expected.giou_loss.detach())
    assert_close(distances.grad, cpu_distances.grad)
    boxes, offsets = _sample_inputs(torch.float32)
    assert_close(dw_ops.boundary_sample(boxes.to("cuda:1"), offsets.to("cuda:1")), dw_ops.boundary_sample(boxes, offsets))


def test_bag_iou_backward_is_deterministic():
    points, strides, distances, gt_boxes = _bag_inputs(torch.float32, DEVICE)
    grads = []
    with deterministic():
        for _ in range(2):
            dist = distances.clone().requires_grad_()
            bag = dw_ops.candidate_bag_iou(points, strides, dist, gt_boxes)
            bag.giou_loss.sum().backward()
            grads.append(dist.grad)
    assert torch.equal(grads[0], grads[1])


def test_bag_ops_with_no_gt_and_no_point():
    points, strides, distances, _ = _bag_inputs(torch.float32, DEVICE)
    bag = dw_ops.candidate_bag_iou(points, strides, distances, [torch.zeros(0, 4, device=DEVICE)] * 3)
    assert bag.giou_loss.shape == (0,) and bag.gt_offsets.tolist() == [0]
    pair_gt, pair_point, offsets = ops.bag_pairs(torch.zeros(0, 2, device=DEVICE), torch.ones(2, 4, device=DEVICE))
    assert pair_gt.shape == pair_point.shape == (0,) and offsets.tolist() == [0, 0, 0]


# ---- dual weights ---------------------------------------------------------------------------------

def _dual_weight_inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 5, 300, 1, 0, 700, 257])  # empty bags, and bags longer than a block
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    K = int(offsets[-1])

    def rand(scale=1.0):
        return (torch.rand(K, generator=g, dtype=torch.float64) * scale).to(dtype)

    return rand(), rand(0.99), rand(2.0), rand(), offsets


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pos_mode,neg_mode", [(0, 0), (1, 1)])
def test_dual_weights_matches_cpu(dtype, pos_mode, neg_mode):
    inputs = _dual_weight_inputs(dtype)
    args = (pos_mode, 5.0, 5.0, 3.0, neg_mode, 2.0)
    expected = ops.dual_weights(*inputs, *args)
    actual = ops.dual_weights(*_to(inputs, DEVICE), *args)
    for a, e in zip(actual, expected):
        assert_close(a, e)


def test_dual_weights_propagates_nan_through_the_bag_reductions():
    score, iou, giou_loss, prior, offsets = _dual_weight_inputs(torch.float32)
    iou[offsets[5] + 100] = float("nan")  # one pair of the 700-pair bag, in a thread other than 0
    score[offsets[2] + 7] = float("nan")
    inputs = (score, iou, giou_loss, prior, offsets)
    expected = ops.dual_weights(*inputs, 0, 5.0, 5.0, 3.0, 0, 2.0)
    actual = ops.dual_weights(*_to(inputs, DEVICE), 0, 5.0, 5.0, 3.0, 0, 2.0)
    assert expected[0][offsets[2]:offsets[3]].isnan().all() and expected[1][offsets[5]:offsets[6]].isnan().any()
    for a, e in zip(actual, expected):
        assert torch.equal(a.isnan().cpu(), e.isnan())
        assert_close(a, e)


def test_dual_weights_beyond_the_grid_cap():
    # 70000 GTs: more than 65535 blocks, so blocks take a second GT.
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(0, 4, (70000,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    K = int(offsets[-1])
    inputs = [torch.rand(K, generator=g, dtype=torch.float64) for _ in range(4)] + [offsets]
    expected = ops.dual_weights(*inputs, 0, 5.0, 5.0, 3.0, 0, 2.0)
    actual = ops.dual_weights(*_to(inputs, DEVICE), 0, 5.0, 5.0, 3.0, 0, 2.0)
    for a, e in zip(actual, expected):
        assert_close(a, e)


def test_dual_weights_without_pairs():
    empty = torch.zeros(0, device=DEVICE)
    pos, neg = ops.dual_weights(empty, empty, empty, empty, torch.zeros(3, dtype=torch.int64, device=DEVICE),
                                0, 5.0, 5.0, 3.0, 0, 2.0)
    assert pos.shape == neg.shape == (0,)


# ---- neg_loss -------------------------------------------------------------------------------------

def _neg_loss_inputs(dtype, N=2, P=2000, C=80, entries=5000, seed=0):
    g = torch.Generator().manual_seed(seed)
    # (N, P, C) and (N, P) views of larger tensors: strides as the head's permuted outputs have.
    cls = (torch.randn(N, C, P, generator=g) * 3).to(dtype).transpose(1, 2)
    ctr = torch.randn(N, P, 2, generator=g).to(dtype)[..., 0]
    index = torch.randperm(N * P * C, generator=g)[:entries].sort().values
    weight = torch.rand(entries, generator=g)
    return cls, ctr, index, weight


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma_in", [2.0, 1.5])
def test_neg_loss_matches_cpu(dtype, gamma_in):
    # 4000 point rows (16 blocks of the dense kernel) of 80 classes, 5000 entries (20 blocks).
    cls, ctr, index, weight = _neg_loss_inputs(dtype)
    results = {}
    for device in ("cpu", DEVICE):
        c = cls.detach().to(device).requires_grad_()
        t = ctr.detach().to(device).requires_grad_()
        loss = dw_ops.neg_loss(c, t, index.to(device), weight.to(device), gamma_in=gamma_in, base_weight=0.7)
        (loss * 1.7).backward()
        results[device] = (loss, c.grad, t.grad)
    for a, e in zip(results[DEVICE], results["cpu"]):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert_close(a, e, dtype)


def test_neg_loss_dense_loop_beyond_its_block_cap():
    # 2 * 140000 point rows: more than the dense kernel's 1024 blocks of 256 threads, so its
    # grid-stride loop runs more than once per thread (2 classes keep the test small).
    cls, ctr, index, weight = _neg_loss_inputs(torch.float64, P=140000, C=2, entries=3000)
    expected = ops.neg_loss(cls, ctr, index, weight, 2.0, 1.5, 0.7, True)
    actual = ops.neg_loss(*_to((cls, ctr, index, weight), DEVICE), 2.0, 1.5, 0.7, True)
    for a, e in zip(actual, expected):
        assert_close(a, e)


def test_neg_loss_float32_is_as_accurate_as_the_cpu_simd_log():
    # In float32 the gradients near s = 1 lose digits to cancellation on any device (1e-3 relative
    # against float64 on the CPU), so CUDA's expf/log1pf and the CPU's SIMD polynomials are
    # compared through their errors against float64: CUDA's may not be more than twice the CPU's.
    g = torch.Generator().manual_seed(3)
    cls = (torch.rand(2, 80, 3000, generator=g, dtype=torch.float64) * 16 - 8).transpose(1, 2)
    ctr = torch.rand(2, 3000, generator=g, dtype=torch.float64) * 20 - 10
    none = torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    exact = ops.neg_loss(cls, ctr, *none, 2.0, 2.0, 1.0, True)
    cpu = ops.neg_loss(cls.float(), ctr.float(), *none, 2.0, 2.0, 1.0, True)
    gpu = ops.neg_loss(cls.float().to(DEVICE), ctr.float().to(DEVICE), *_to(none, DEVICE), 2.0, 2.0, 1.0, True)
    for c, a, e in zip(cpu, gpu, exact):
        err_cpu, err_gpu = (c.double() - e).abs(), (a.cpu().double() - e).abs()
        floor = 2e-6 * float(e.abs().max())
        assert float(err_gpu.max()) <= 2 * float(err_cpu.max()) + floor
        assert float(err_gpu.mean()) <= 2 * float(err_cpu.mean()) + floor


def test_neg_loss_grad_is_class_major_like_the_head_output():
    cls, ctr, index, weight = _to(_neg_loss_inputs(torch.float32, P=100, entries=50), DEVICE)
    cls = cls.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # (N, P, C) view of (N, C, P)
    loss, grad_cls, grad_ctr = ops.neg_loss(cls, ctr, index, weight, 2.0, 2.0, 1.0, True)
    assert grad_cls.stride() == cls.stride() and grad_ctr.shape == ctr.shape
    dw_ops.neg_loss(cls, ctr, index, weight).backward()
    assert cls.grad.stride() == cls.stride()


def test_neg_loss_is_deterministic():
    cls, ctr, index, weight = _to(_neg_loss_inputs(torch.float32), DEVICE)
    cls.requires_grad_()
    runs = []
    with deterministic():
        for _ in range(2):
            cls.grad = None
            loss = dw_ops.neg_loss(cls, ctr, index, weight)
            loss.backward()
            runs.append((loss.detach(), cls.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_neg_loss_of_no_score_is_zero(shape):
    cls = torch.randn(shape, device=DEVICE, requires_grad=True)
    ctr = torch.randn(shape[:2], device=DEVICE, requires_grad=True)
    loss = dw_ops.neg_loss(cls, ctr)
    loss.backward()
    assert loss.shape == () and loss.dtype == torch.float32 and loss.item() == 0
    assert cls.grad.shape == cls.shape and ctr.grad.shape == ctr.shape and not ctr.grad.any()


def test_neg_loss_rejects_inputs_on_two_devices():
    cls, ctr, index, weight = _neg_loss_inputs(torch.float32, P=10, entries=5)
    with pytest.raises(RuntimeError, match="ctr_logits is on cpu but cls_logits is on cuda"):
        ops.neg_loss(cls.to(DEVICE), ctr, index.to(DEVICE), weight.to(DEVICE), 2.0, 2.0, 1.0, False)


# ---- boundary_sample ------------------------------------------------------------------------------

def _sample_inputs(dtype, shape=(2, 17, 23), seed=0):
    g = torch.Generator().manual_seed(seed)
    N, H, W = shape
    boxes = torch.randn(N, 4, H, W, generator=g).to(dtype)
    offsets = (torch.randn(N, 8, H, W, generator=g) * 4).to(dtype)  # some samples leave the map
    return boxes, offsets


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_boundary_sample_matches_cpu(dtype):
    boxes, offsets = _sample_inputs(dtype)
    grad_out = torch.randn(boxes.shape).to(dtype)
    results = {}
    for device in ("cpu", DEVICE):
        b, o = boxes.to(device).requires_grad_(), offsets.to(device).requires_grad_()
        out = dw_ops.boundary_sample(b, o)
        out.backward(grad_out.to(device))
        results[device] = (out, b.grad, o.grad)
    for a, e in zip(results[DEVICE], results["cpu"]):
        assert_close(a.detach(), e.detach(), dtype)


def test_boundary_sample_backward_is_deterministic():
    # Small offsets: many samples of a plane share input elements, so the sums have many terms.
    boxes, offsets = _to(_sample_inputs(torch.float32, shape=(2, 40, 50)), DEVICE)
    offsets = offsets / 8
    grad = torch.randn_like(boxes)
    with deterministic():
        runs = [ops._boundary_sample_backward(grad, boxes, offsets) for _ in range(3)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))
    expected = ops._boundary_sample_backward(grad.cpu(), boxes.cpu(), offsets.cpu())
    for a, e in zip(runs[0], expected):
        assert_close(a, e)


def test_boundary_sample_with_nan_offsets_matches_cpu():
    boxes, offsets = _sample_inputs(torch.float32)
    offsets[0, 1, 3, 4] = offsets[1, 6, 0, 0] = float("nan")
    results = {}
    for device in ("cpu", DEVICE):
        b, o = boxes.to(device).requires_grad_(), offsets.to(device).requires_grad_()
        out = dw_ops.boundary_sample(b, o)
        out.sum().backward()
        results[device] = (out, b.grad, o.grad)
    for a, e in zip(results[DEVICE], results["cpu"]):
        assert torch.equal(a.isnan().cpu(), e.isnan())
        assert_close(a.detach(), e.detach())


def test_boundary_sample_beyond_the_grid_cap():
    # 4 * 2100 * 2100 = 17.6 M samples: more than 65535 blocks of 256 threads.
    boxes, offsets = _sample_inputs(torch.float32, shape=(1, 2100, 2100))
    grad = torch.randn(boxes.shape)
    expected = (ops.boundary_sample(boxes, offsets), *ops._boundary_sample_backward(grad, boxes, offsets))
    b, o = boxes.to(DEVICE), offsets.to(DEVICE)
    actual = (ops.boundary_sample(b, o), *ops._boundary_sample_backward(grad.to(DEVICE), b, o))
    for a, e in zip(actual, expected):
        assert_close(a, e)


def test_boundary_sample_of_an_empty_map():
    boxes, offsets = _to(_sample_inputs(torch.float32, shape=(2, 0, 5)), DEVICE)
    boxes.requires_grad_()
    out = dw_ops.boundary_sample(boxes, offsets)
    out.sum().backward()
    assert out.shape == boxes.shape and boxes.grad.shape == boxes.shape
