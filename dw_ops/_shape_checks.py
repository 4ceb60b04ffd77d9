"""The argument checks of csrc/common/checks.h, for the fake kernels.

Under ``torch.compile`` (and any FakeTensorMode) the C++ ops never run, so their checks would not
either: a wrong shape would trace on and fail later, far from the call. These functions repeat the
shape, dtype and device checks with ``torch._check`` and the same messages, so that an error reads
the same in eager and compiled code. Index *values* are data, which a fake tensor does not have;
they stay checked by the kernels. Keep each function in step with its C++ twin.
"""
from __future__ import annotations

import torch

# c10's names of the scalar types, as the C++ messages print them
_SCALAR_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
                 torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char",
                 torch.uint8: "Byte", torch.bool: "Bool", torch.complex64: "ComplexFloat",
                 torch.complex128: "ComplexDouble"}


def _dtype(t: torch.Tensor) -> str:
    return _SCALAR_NAMES.get(t.dtype, str(t.dtype))


def shape_str(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _check(cond: bool, *parts) -> None:
    torch._check(cond, lambda: "".join(str(p) for p in parts))


def check_dim(t, name, dim, layout):
    _check(t.dim() == dim, name, " must have shape ", layout, ", got ", shape_str(t))


def check_size(t, name, d, expected, layout):
    _check(t.shape[d] == expected, name, " must have shape ", layout, " with size ", expected, " in dim ", d,
           ", got ", shape_str(t))


def check_float(t, name, allow_half):
    ok = t.dtype in (torch.float32, torch.float64) or (allow_half and t.dtype in (torch.float16, torch.bfloat16))
    wanted = "float16, bfloat16, float32 or float64" if allow_half else "float32 or float64"
    _check(ok, name, " must be ", wanted, ", got ", _dtype(t))


def check_index(t, name):
    _check(t.dtype == torch.int64, name, " must be int64, got ", _dtype(t))
    _check(t.dim() == 1, name, " must be 1-D, got ", shape_str(t))


def check_same_dtype(a, a_name, b, b_name):
    _check(a.dtype == b.dtype, b_name, " must have the dtype of ", a_name, " (", _dtype(a), "), got ", _dtype(b))


def check_same_device(*named):
    first, first_name = named[0]
    for t, name in named:
        _check(t.device == first.device, name, " is on ", t.device, " but ", first_name, " is on ", first.device,
               "; all inputs must be on one device")


def check_bag_pairs(points, gt_boxes):
    check_dim(points, "points", 2, "(P, 2)")
    check_size(points, "points", 1, 2, "(P, 2)")
    check_dim(gt_boxes, "gt_boxes", 2, "(M, 4)")
    check_size(gt_boxes, "gt_boxes", 1, 4, "(M, 4)")
    check_float(points, "points", False)
    check_same_dtype(points, "points", gt_boxes, "gt_boxes")
    check_same_device((points, "points"), (gt_boxes, "gt_boxes"))


def check_bag_iou_pairs(points, distances, gt_boxes, gt_image, pair_gt, pair_point):
    check_bag_pairs(points, gt_boxes)
    num_points, num_gts = points.shape[0], gt_boxes.shape[0]
    check_dim(distances, "distances", 3, "(N, P, 4)")
    check_size(distances, "distances", 1, num_points, "(N, P, 4) with P = points.size(0)")
    check_size(distances, "distances", 2, 4, "(N, P, 4)")
    check_same_dtype(points, "points", distances, "distances")
    check_index(gt_image, "gt_image")
    check_size(gt_image, "gt_image", 0, num_gts, "(M,) with M = gt_boxes.size(0)")
    check_index(pair_gt, "pair_gt")
    check_index(pair_point, "pair_point")
    _check(pair_gt.numel() == pair_point.numel(), "pair_gt and pair_point must have the same length, got ",
           pair_gt.numel(), " and ", pair_point.numel())
    check_same_device((points, "points"), (distances, "distances"), (gt_boxes, "gt_boxes"), (gt_image, "gt_image"),
                      (pair_gt, "pair_gt"), (pair_point, "pair_point"))


def check_bag_iou(points, strides, distances, gt_boxes, gt_image, pair_gt, pair_point):
    check_bag_iou_pairs(points, distances, gt_boxes, gt_image, pair_gt, pair_point)
    check_dim(strides, "strides", 1, "(P,)")
    check_size(strides, "strides", 0, points.shape[0], "(P,) with P = points.size(0)")
    check_same_dtype(points, "points", strides, "strides")
    check_same_device((points, "points"), (strides, "strides"))


def check_bag_iou_grad(grad, pair_gt):
    _check(grad.numel() == pair_gt.numel(), "grad_giou_loss must have one value per pair (", pair_gt.numel(),
           "), got ", grad.numel())


def check_dual_weights(score, iou, giou_loss, prior, gt_pair_offsets):
    num_pairs = score.numel()
    for t, name in ((score, "score"), (iou, "iou"), (giou_loss, "giou_loss"), (prior, "prior")):
        check_dim(t, name, 1, "(K,)")
        check_float(t, name, False)
        check_same_dtype(score, "score", t, name)
        _check(t.numel() == num_pairs, name, " must have K = ", num_pairs, " elements (one per bag pair), got ",
               t.numel())
    check_index(gt_pair_offsets, "gt_pair_offsets")
    _check(gt_pair_offsets.numel() >= 1, "gt_pair_offsets must have M + 1 >= 1 elements")
    check_same_device((score, "score"), (iou, "iou"), (giou_loss, "giou_loss"), (prior, "prior"),
                      (gt_pair_offsets, "gt_pair_offsets"))


def check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight):
    check_dim(cls_logits, "cls_logits", 3, "(N, P, C)")
    check_dim(ctr_logits, "ctr_logits", 2, "(N, P)")
    check_size(ctr_logits, "ctr_logits", 0, cls_logits.shape[0], "(N, P) matching cls_logits (N, P, C)")
    check_size(ctr_logits, "ctr_logits", 1, cls_logits.shape[1], "(N, P) matching cls_logits (N, P, C)")
    check_float(cls_logits, "cls_logits", True)
    check_same_dtype(cls_logits, "cls_logits", ctr_logits, "ctr_logits")
    check_index(entry_index, "entry_index")
    check_dim(entry_weight, "entry_weight", 1, "(U,)")
    check_float(entry_weight, "entry_weight", False)
    _check(entry_weight.numel() == entry_index.numel(), "entry_weight must have one value per entry_index (",
           entry_index.numel(), "), got ", entry_weight.numel())
    check_same_device((cls_logits, "cls_logits"), (ctr_logits, "ctr_logits"), (entry_index, "entry_index"),
                      (entry_weight, "entry_weight"))


def check_boundary_sample(boxes, offsets):
    check_dim(boxes, "boxes", 4, "(N, 4, H, W)")
    check_size(boxes, "boxes", 1, 4, "(N, 4, H, W)")
    check_dim(offsets, "offsets", 4, "(N, 8, H, W)")
    check_size(offsets, "offsets", 1, 8, "(N, 8, H, W)")
    _check(offsets.shape[0] == boxes.shape[0] and offsets.shape[2] == boxes.shape[2]
           and offsets.shape[3] == boxes.shape[3],
           "offsets must have shape (N, 8, H, W) matching boxes ", shape_str(boxes), ", got ", shape_str(offsets))
    check_float(boxes, "boxes", True)
    check_same_dtype(boxes, "boxes", offsets, "offsets")
    check_same_device((boxes, "boxes"), (offsets, "offsets"))


def check_boundary_sample_grad(grad, boxes):
    _check(grad.shape == boxes.shape, "grad must have the shape of boxes ", shape_str(boxes), ", got ",
           shape_str(grad))
