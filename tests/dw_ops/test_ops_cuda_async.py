"""The CUDA ops never wait for the GPU: the DW loss's operator chain (bag IoU, dual weights, negative
term, boundary sampling, forward and backward) runs under torch.cuda.set_sync_debug_mode("error")
and can be captured in a CUDA graph. Bad index values, which the host no longer reads, fail a
device-side check that names the argument. Needs a GPU."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import dw_ops
from ops_problems import random_problem
from tests.paths import ROOT

DEVICE = "cuda"
ops = torch.ops.dw_ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _static_inputs(seed=0):
    """A random problem on the GPU with its data-dependent structure (bag pairs, unique entries)
    found beforehand: those steps have outputs whose size depends on the data, so they read it back."""
    prob = random_problem(seed, num_gts=(6, 3), num_classes=5, dtype=torch.float32).to(DEVICE)
    bag = dw_ops.candidate_bag_iou(prob.points, prob.strides, prob.distances, prob.gt_boxes)
    labels = prob.labels.to(DEVICE)
    P, C = prob.points.shape[0], prob.num_classes
    entries = dw_ops.pair_entry_index(bag, labels, P, C)
    unique, inverse = torch.unique(entries, sorted=True, return_inverse=True)
    N = prob.distances.shape[0]
    g = torch.Generator().manual_seed(seed + 1)
    boxes = torch.rand(N, 4, 6, 7, generator=g).to(DEVICE)
    offsets = (torch.randn(N, 8, 6, 7, generator=g) * 2).to(DEVICE)
    leaves = {"distances": prob.distances, "cls": prob.cls_logits, "ctr": prob.ctr_logits, "boxes": boxes,
              "offsets": offsets}
    fixed = dict(points=prob.points, strides=prob.strides, gt_boxes=torch.cat(prob.gt_boxes), bag=bag, labels=labels,
                 unique=unique, inverse=inverse)
    return {k: v.clone().requires_grad_() for k, v in leaves.items()}, fixed


def _dw_loss(leaves, fixed):
    """DWLoss's released terms from the ops, given the bag pairs and the unique entries."""
    bag, labels = fixed["bag"], fixed["labels"]
    prior, iou, giou_loss = ops.bag_iou(fixed["points"], fixed["strides"], leaves["distances"], fixed["gt_boxes"],
                                        bag.gt_image, bag.gt_index, bag.point_index, 1.11, False)
    cls, ctr = leaves["cls"], leaves["ctr"]
    score = (cls[bag.image_index, bag.point_index, labels[bag.gt_index]].sigmoid()
             * ctr[bag.image_index, bag.point_index].sigmoid())
    pos_weight, pair_neg = ops.dual_weights(score.detach(), iou, giou_loss.detach(), prior, bag.gt_offsets,
                                            0, 5.0, 5.0, 3.0, 0, 2.0)
    neg_prob = pair_neg.new_full(fixed["unique"].shape, float("inf")).scatter_reduce_(0, fixed["inverse"], pair_neg,
                                                                                      "amin")
    neg, _, _ = ops.neg_loss(cls, ctr, fixed["unique"], neg_prob, 2.0, 2.0, 1.0, True)
    ones = torch.ones_like(score)
    pos = (pos_weight * (F.binary_cross_entropy(score, ones, reduction="none") + 5.0 * giou_loss)).sum()
    refined = dw_ops.boundary_sample(leaves["boxes"], leaves["offsets"])
    return pos + neg / (1 - neg_prob).sum().clamp(min=1.0) + refined.square().mean()


def _grads(leaves):
    return [leaves[k].grad.clone() for k in sorted(leaves)]


def test_dw_loss_forward_and_backward_never_synchronise():
    leaves, fixed = _static_inputs()
    _dw_loss(leaves, fixed).backward()  # warm up: lazy initialisations may synchronise once
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for leaf in leaves.values():
            leaf.grad = None
        loss = _dw_loss(leaves, fixed)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert torch.isfinite(loss).item() and all(torch.isfinite(g).all() for g in _grads(leaves))


def test_dw_loss_forward_and_backward_replay_as_a_cuda_graph():
    leaves, fixed = _static_inputs()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture, as torch.cuda.graphs requires
        for _ in range(2):
            _dw_loss(leaves, fixed).backward()
    torch.cuda.current_stream().wait_stream(side)
    for leaf in leaves.values():
        leaf.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = _dw_loss(leaves, fixed)
        static_loss.backward()
    new_leaves, _ = _static_inputs(seed=0)
    with torch.no_grad():  # new values for the same inputs (same bag structure), then replay
        for k in leaves:
            leaves[k].copy_(new_leaves[k] * 1.01)
            new_leaves[k].mul_(1.01)
    graph.replay()
    eager = _dw_loss(new_leaves, fixed)
    eager.backward()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_loss, eager)
    for a, e in zip(_grads(leaves), _grads(new_leaves)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("code,message", [
    ("ops.bag_iou(pts, pts[:, 0], dist, gts, img, pair_gt + 1, pair_point, 1.11, False)",
     "pair_gt must index rows of gt_boxes"),
    ("ops.dual_weights(s, s, s, s, torch.tensor([0, 3, 2, 4], device='cuda'), 0, 5.0, 5.0, 3.0, 0, 2.0)",
     "gt_pair_offsets must be non-decreasing"),
    ("ops.neg_loss(cls, cls[..., 0], torch.tensor([3, 3], device='cuda'), s[:2], 2.0, 2.0, 1.0, True)",
     "entry_index must be strictly increasing"),
])
def test_bad_index_values_fail_a_device_side_check_that_names_them(code, message):
    # A device-side assert leaves the CUDA context unusable, so each case runs in its own process.
    setup = ("import torch, dw_ops; ops = torch.ops.dw_ops; d = 'cuda'\n"
             "pts = torch.rand(5, 2, device=d) * 10; dist = torch.rand(1, 5, 4, device=d)\n"
             "gts = torch.tensor([[0.0, 0.0, 10.0, 10.0]], device=d); img = torch.zeros(1, dtype=torch.long, device=d)\n"
             "pair_gt = torch.zeros(5, dtype=torch.long, device=d); pair_point = torch.arange(5, device=d)\n"
             "s = torch.rand(4, device=d); cls = torch.randn(1, 5, 3, device=d)\n")
    script = setup + code + "\ntorch.cuda.synchronize()\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    assert message in out.stdout + out.stderr and "device-side assert" in out.stdout + out.stderr


def _count_syncs(fn):
    """How many times ``fn`` makes the host wait for the GPU (torch's sync debug mode warns at each)."""
    import warnings
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def test_candidate_bags_wait_for_the_gpu_once():
    """Packing the GT boxes reads nothing back; only bag_pairs' nonzero (its output size depends on
    the data) waits."""
    prob = random_problem(0, num_gts=(6, 0, 3), num_classes=5, dtype=torch.float32).to(DEVICE)
    assert _count_syncs(lambda: dw_ops.candidate_bag_iou(prob.points, prob.strides, prob.distances,
                                                         prob.gt_boxes)) == 1


def test_dw_training_step_waits_for_the_gpu_three_times():
    """The released DW loss, forward and backward, from the head's outputs: the target check, the
    bag pairs' nonzero and the negative entries' unique are the only reads (docs/architecture.md)."""
    from dwdet.losses import DWLoss, prepare_batch
    g = torch.Generator().manual_seed(0)
    sizes, strides = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)], (8, 16, 32, 64, 128)
    cls = [torch.randn(2, 5, h, w, generator=g).to(DEVICE).requires_grad_() for h, w in sizes]
    reg = [(torch.rand(2, 4, h, w, generator=g) * 60 + 1).to(DEVICE).requires_grad_() for h, w in sizes]
    obj = [torch.randn(2, 1, h, w, generator=g).to(DEVICE).requires_grad_() for h, w in sizes]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 90.0, 70.0], [30.0, 5.0, 60.0, 100.0]], device=DEVICE),
                "labels": torch.tensor([1, 3], device=DEVICE)},
               {"boxes": torch.tensor([[0.0, 0.0, 150.0, 120.0]], device=DEVICE),
                "labels": torch.tensor([4], device=DEVICE)}]
    loss = DWLoss(5)

    def step():
        sum(loss(prepare_batch(cls, reg, obj, targets, strides)).values()).backward()

    step()  # warm-up: first-call allocations and lazy initialisation
    assert _count_syncs(step) == 3
