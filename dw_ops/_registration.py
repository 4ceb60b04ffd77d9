"""Fake (meta) kernels, autograd and autocast rules of the dw_ops operators.

The schemas and the CPU/CUDA kernels live in csrc/; this module adds what torch.compile, autograd
and AMP need. It must run after the extension is loaded (the ops must exist).
"""
import torch

from dw_ops import _ext  # noqa: F401  (registers the operators)
from dw_ops import _shape_checks as checks

ops = torch.ops.dw_ops
_LOSS_OPS = ("dw_ops::bag_iou", "dw_ops::dual_weights", "dw_ops::neg_loss")


# ---- fake kernels: the C++ argument checks, then output shapes and dtypes ------------------------

@torch.library.register_fake("dw_ops::bag_pairs")
def _(points, gt_boxes):
    checks.check_bag_pairs(points, gt_boxes)
    num_pairs = torch.library.get_ctx().new_dynamic_size()
    pair = points.new_empty((num_pairs,), dtype=torch.int64)
    return pair, pair.clone(), points.new_empty((gt_boxes.shape[0] + 1,), dtype=torch.int64)


@torch.library.register_fake("dw_ops::bag_iou")
def _(points, strides, distances, gt_boxes, gt_image, pair_gt, pair_point, sigma, hard_prior):
    checks.check_bag_iou(points, strides, distances, gt_boxes, gt_image, pair_gt, pair_point)
    out = distances.new_empty(pair_gt.shape)
    return out, out.clone(), out.clone()


@torch.library.register_fake("dw_ops::_bag_iou_backward")
def _(grad, points, distances, gt_boxes, gt_image, pair_gt, pair_point):
    checks.check_bag_iou_pairs(points, distances, gt_boxes, gt_image, pair_gt, pair_point)
    checks.check_bag_iou_grad(grad, pair_gt)
    return torch.empty_like(distances, memory_format=torch.contiguous_format)


@torch.library.register_fake("dw_ops::dual_weights")
def _(score, iou, giou_loss, prior, gt_pair_offsets, pos_mode, beta, mu_num, mu_den, neg_mode, gamma1):
    checks.check_dual_weights(score, iou, giou_loss, prior, gt_pair_offsets)
    return torch.empty_like(score), torch.empty_like(score)


def _neg_loss_dtype(cls_logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if cls_logits.dtype == torch.float64 else torch.float32


@torch.library.register_fake("dw_ops::neg_loss")
def _(cls_logits, ctr_logits, entry_index, entry_weight, gamma_out, gamma_in, base_weight, compute_grad):
    checks.check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight)
    n, p, c = cls_logits.shape
    rows = n if compute_grad else 0
    grad_cls = cls_logits.new_empty((rows, c, p)).transpose(1, 2)  # class-major, like the kernels
    return cls_logits.new_empty((), dtype=_neg_loss_dtype(cls_logits)), grad_cls, ctr_logits.new_empty((rows, p))


@torch.library.register_fake("dw_ops::boundary_sample")
def _(boxes, offsets):
    checks.check_boundary_sample(boxes, offsets)
    return torch.empty_like(boxes, memory_format=torch.contiguous_format)


@torch.library.register_fake("dw_ops::_boundary_sample_backward")
def _(grad, boxes, offsets):
    checks.check_boundary_sample(boxes, offsets)
    checks.check_boundary_sample_grad(grad, boxes)
    return (torch.empty_like(boxes, memory_format=torch.contiguous_format),
            torch.empty_like(offsets, memory_format=torch.contiguous_format))


# ---- autograd --------------------------------------------------------------------------------------

def _bag_iou_setup(ctx, inputs, output):
    points, _strides, distances, gt_boxes, gt_image, pair_gt, pair_point, _sigma, _hard = inputs
    ctx.save_for_backward(points, distances, gt_boxes, gt_image, pair_gt, pair_point)
    ctx.mark_non_differentiable(output[0], output[1])  # prior and IoU carry no gradient


def _bag_iou_backward(ctx, _grad_prior, _grad_iou, grad_giou_loss):
    points, distances, gt_boxes, gt_image, pair_gt, pair_point = ctx.saved_tensors
    grad_distances = None
    if ctx.needs_input_grad[2]:
        grad_distances = ops._bag_iou_backward(grad_giou_loss, points, distances, gt_boxes, gt_image, pair_gt,
                                               pair_point)
    return None, None, grad_distances, None, None, None, None, None, None


torch.library.register_autograd("dw_ops::bag_iou", _bag_iou_backward, setup_context=_bag_iou_setup)


def _neg_loss_setup(ctx, inputs, output):
    # The forward already computed the gradients (one pass over the scores); keep them.
    _loss, grad_cls, grad_ctr = output
    ctx.mark_non_differentiable(grad_cls, grad_ctr)
    ctx.set_materialize_grads(False)  # else autograd fills (N, P, C) zeros for the unused grad outputs
    ctx.save_for_backward(grad_cls, grad_ctr)
    ctx.computed = inputs[-1]


def _neg_loss_backward(ctx, grad, _grad_of_grad_cls, _grad_of_grad_ctr):
    if not ctx.computed:
        raise RuntimeError("dw_ops::neg_loss was called with compute_grad=False, so it has no gradient; "
                           "call dw_ops.neg_loss (which sets it) or pass compute_grad=True")
    if grad is None:
        return (None,) * 8
    grad_cls, grad_ctr = ctx.saved_tensors
    return (grad_cls * grad.to(grad_cls.dtype), grad_ctr * grad.to(grad_ctr.dtype),
            None, None, None, None, None, None)


torch.library.register_autograd("dw_ops::neg_loss", _neg_loss_backward, setup_context=_neg_loss_setup)


# boundary_sample's autograd is registered in C++ (csrc/autograd.cpp): it runs once per FPN level.

# ---- autocast: the assignment and the loss run in float32 under AMP -----------------------------
for _name in _LOSS_OPS:
    for _device in ("cpu", "cuda"):
        torch.library.register_autocast(_name, _device, torch.float32)
