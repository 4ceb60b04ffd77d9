"""What the point-based losses share: the flattened head outputs of a batch with its candidate bags,
the one-GT-per-point rule, and classification terms on the joint score through ``dw_ops.neg_loss``."""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import dw_ops
from dwdet.models.points import anchor_points, flatten_levels


class Batch(NamedTuple):
    """A batch as the losses see it (float32 even under AMP; float64 stays float64)."""

    cls: Tensor  # (N, P, C) class logits, class-major view
    ctr: Tensor  # (N, P) centerness logits
    dist: Tensor  # (N, P, 4) (l, t, r, b) distances in pixels
    points: Tensor  # (P, 2)
    strides: Tensor  # (P,)
    level_shapes: List[Tuple[int, int]]  # (H, W) of each FPN level
    level_strides: Tuple[int, ...]  # the stride of each FPN level
    gt_boxes: Tensor  # (M, 4) all GTs of the batch, image by image
    labels: Tensor  # (M,)
    bag: dw_ops.BagPairs  # every (GT, point inside it) pair, with the IoU and GIoU loss of its prediction


def prepare_batch(name: str, num_classes: int, strides: Sequence[int], cls_logits: List[Tensor],
                  bbox_preds: List[Tensor], centerness: List[Tensor], targets: List[Dict[str, Tensor]]) -> Batch:
    """Check the loss inputs (``name`` is the loss's, for the messages) and flatten them."""
    if not (len(cls_logits) == len(bbox_preds) == len(centerness) == len(strides)):
        raise ValueError(f"{name}: expected {len(strides)} levels of cls_logits, bbox_preds and centerness, got "
                         f"{len(cls_logits)}, {len(bbox_preds)} and {len(centerness)}")
    if len(targets) != cls_logits[0].shape[0]:
        raise ValueError(f"{name}: got {len(targets)} targets for a batch of {cls_logits[0].shape[0]} images")
    cls = flatten_levels([upcast(x) for x in cls_logits])
    ctr = flatten_levels([upcast(x) for x in centerness])[..., 0]
    dist = flatten_levels([upcast(x) for x in bbox_preds])
    if cls.shape[2] != num_classes:
        raise ValueError(f"{name}: cls_logits have {cls.shape[2]} classes, the loss was built for {num_classes}")
    sizes = [tuple(x.shape[-2:]) for x in cls_logits]
    points, point_strides = anchor_points(sizes, strides, device=cls.device, dtype=cls.dtype)
    boxes = [t["boxes"].to(cls) for t in targets]
    labels = torch.cat([t["labels"] for t in targets]).to(cls.device, torch.int64)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name}: target labels must be 0-based class ids in [0, {num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    bag = dw_ops.candidate_bag_iou(points, point_strides, dist, boxes)
    gt_boxes = torch.cat(boxes) if boxes else dist.new_zeros(0, 4)
    return Batch(cls, ctr, dist, points, point_strides, sizes, tuple(strides), gt_boxes.reshape(-1, 4),
                 labels, bag)


def upcast(x: Tensor) -> Tensor:
    """16-bit AMP activations become float32 for the loss; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def pair_lookup(bag: dw_ops.BagPairs, gt_index: Tensor, point_index: Tensor, num_points: int) -> Tensor:
    """Index in ``bag`` of the pairs (gt_index, point_index), which must be bag pairs (the point
    strictly inside the GT). The bag is sorted by GT, then point, so its keys are ascending."""
    keys = bag.gt_index * num_points + bag.point_index
    return torch.searchsorted(keys, gt_index * num_points + point_index)


def one_gt_per_point(entry: Tensor, key: Tensor, gt_index: Tensor) -> Tensor:
    """Mask of the pairs that keep their point: among the pairs of one point (same ``entry``, the
    image and point), the one with the largest ``key``, ties to the lowest GT index (an argmax
    over GTs, as MMDetection's assigners resolve a point claimed by several GTs)."""
    order = torch.argsort(gt_index, stable=True)
    order = order[torch.argsort(-key[order], stable=True)]
    order = order[torch.argsort(entry[order], stable=True)]
    sorted_entry = entry[order]
    first = torch.ones_like(sorted_entry, dtype=torch.bool)
    first[1:] = sorted_entry[1:] != sorted_entry[:-1]
    keep = torch.zeros_like(entry, dtype=torch.bool)
    keep[order[first]] = True
    return keep


def rank_in_group(group: Tensor, key: Tensor) -> Tensor:
    """Rank of each element by ascending key within its group (0 = smallest; ties by position)."""
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    sorted_group = group[order]
    start = torch.searchsorted(sorted_group, sorted_group, side="left")
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - start
    return rank


def joint_score_terms(batch: Batch, image: Tensor, point: Tensor, label: Tensor, *, gamma: float,
                      neg_weight: float) -> tuple[Tensor, Tensor]:
    """The two halves of a soft-target classification loss on the joint score
    ``s = sigmoid(cls) * sigmoid(ctr)`` (the score inference ranks by):

    * the negative half ``neg_weight * sum s^gamma * BCE(s, 0)`` over every score of the batch except
      the positive entries (image, point, label) — one fused pass (``dw_ops.neg_loss``), summed;
    * the joint scores of the positive entries (differentiable), for the method's positive term.

    The positive entries must be distinct (one GT per point)."""
    num_points, num_classes = batch.cls.shape[1:]
    entries, _ = torch.sort((image * num_points + point) * num_classes + label)
    neg = dw_ops.neg_loss(batch.cls, batch.ctr, entries, batch.cls.new_zeros(entries.shape).detach(),
                          gamma=gamma, base_weight=neg_weight)
    score = batch.cls[image, point, label].sigmoid() * batch.ctr[image, point].sigmoid()
    return neg, score


def quality_focal_pos(score: Tensor, target: Tensor, beta: float) -> Tensor:
    """Positive entries of the quality focal loss (GFL): ``BCE(s, y) |y - s|^beta``, summed."""
    return (F.binary_cross_entropy(score, target, reduction="none") * (target - score).abs().pow(beta)).sum()
