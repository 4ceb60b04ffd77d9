"""ATSS (Zhang et al., CVPR 2020) on the point head: adaptive training sample selection, with the
FCOS-style loss MMDetection trains it with (focal loss, GIoU weighted by centerness, centerness BCE).

An ATSS positive lies strictly inside its GT, so it is a pair of the batch's candidate bags, where its
IoU and GIoU loss are already computed.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from dwdet.losses.batch import Batch
from dwdet.losses.common import (Assignment, ClassWeights, PointLoss, candidate_bags, check_positive,
                                 focal_classification, focal_weights, hard_assignment, num_positives,
                                 one_gt_per_point, pair_lookup)
from dwdet.losses.fcos import centerness_target, gt_distances
from dwdet.utils.dist import reduce_mean


def assign_atss(batch: Batch, *, topk: int = 9, anchor_scale: float = 8.0) -> Assignment:
    """ATSS label assignment of a batch.

    Each point carries a square prior of side ``anchor_scale * stride`` centred on it. For each GT
    the ``topk`` points of each level nearest (L2) to its centre (ties to the lower point index)
    are its candidates; their prior IoUs with the GT give the threshold ``mean + std`` (unbiased
    std). A candidate is positive when its IoU reaches the threshold and the point lies strictly
    inside the GT. A point that is positive for several GTs goes to the one of highest prior IoU.
    """
    bag = candidate_bags(batch)
    points, gt_boxes, num_points = batch.points, batch.gt_boxes, batch.num_points
    if len(gt_boxes) == 0:
        return hard_assignment(batch, bag, bag.gt_index.new_zeros(0))
    centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    candidates, start = [], 0
    for (height, width), stride in zip(batch.level_shapes, batch.level_strides):
        size = height * width
        candidates.append(_level_candidates(points[start:start + size], height, width, stride, centers,
                                            min(topk, size)) + start)
        start += size
    candidates = torch.cat(candidates, dim=1)  # (M, K) point indices
    xy = points[candidates]
    half = (anchor_scale / 2) * batch.strides[candidates, None]
    iou = _aligned_iou(torch.cat((xy - half, xy + half), dim=2), gt_boxes[:, None])
    threshold = iou.mean(dim=1) + iou.std(dim=1)
    box = gt_boxes[:, None]
    inside = torch.cat((xy - box[..., :2], box[..., 2:] - xy), dim=2).amin(dim=2) > 0
    gt, slot = ((iou >= threshold[:, None]) & inside).nonzero(as_tuple=True)
    pair = pair_lookup(bag, gt, candidates[gt, slot], num_points)
    entry = bag.image_index[pair] * num_points + bag.point_index[pair]
    return hard_assignment(batch, bag, pair[one_gt_per_point(entry, iou[gt, slot], gt)].sort().values)


def _level_candidates(points: Tensor, height: int, width: int, stride: float, centers: Tensor, k: int) -> Tensor:
    """(M, k) indices of the k points of one level nearest to each centre, ties to the lower index.

    Only a window of (2r + 1)^2 cells around each centre is searched, r the smallest integer with
    r + 1/2 > (m - 1/2) sqrt(2), m = ceil(sqrt(k)): every cell outside the window is at least
    r + 1/2 cells away, while the window holds >= m^2 >= k cells within (m - 1/2) sqrt(2), so the
    k nearest (and any cell tied with the k-th) are inside. That needs the map to be >= m cells
    each way and the centre on the map; otherwise the whole level is searched."""
    m = math.isqrt(k - 1) + 1
    r = math.floor((m - 0.5) * math.sqrt(2) - 0.5) + 1
    u, v = centers[:, 0] / stride - 0.5, centers[:, 1] / stride - 0.5  # in cells
    on_map = bool(((u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)).all())
    if min(height, width) < m or height * width <= (2 * r + 1) ** 2 or not on_map:
        index = torch.arange(height * width, device=points.device).expand(len(centers), -1)
    else:
        rows, cols = min(2 * r + 1, height), min(2 * r + 1, width)
        top = (torch.floor(v + 0.5).long() - r).clamp(0, height - rows)
        left = (torch.floor(u + 0.5).long() - r).clamp(0, width - cols)
        row = top[:, None] + torch.arange(rows, device=points.device)
        col = left[:, None] + torch.arange(cols, device=points.device)
        index = (row[:, :, None] * width + col[:, None, :]).flatten(1)  # ascending point index
    xy = points[index]
    distance = (centers[:, 0, None] - xy[..., 0]).square() + (centers[:, 1, None] - xy[..., 1]).square()
    return index.gather(1, _nearest(distance, k))


def _nearest(distance: Tensor, k: int) -> Tensor:
    """(M, k) column indices of the k smallest distances of each row, ties to the lower index
    (a GT centred between grid points has equidistant neighbours), ascending."""
    kth = distance.topk(k, dim=1, largest=False).values[:, -1:]
    below, tied = distance < kth, distance == kth
    chosen = below | (tied & (tied.cumsum(dim=1) <= k - below.sum(dim=1, keepdim=True)))
    return chosen.nonzero()[:, 1].view(-1, k)


def _aligned_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes ``a`` and ``b`` (broadcast, xyxy), the union clamped to >= 1e-6 as the bag's IoU."""
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return overlap / (area_a + area_b - overlap).clamp(min=1e-6)


def positive_centerness(batch: Batch, a: Assignment) -> Tensor:
    """The centerness target of each assigned pair: of its point with respect to its GT."""
    return centerness_target(gt_distances(batch, a.bag.point_index[a.pairs], a.bag.gt_index[a.pairs]))


class ATSSLoss(PointLoss):
    """ATSS loss with the loss contract of dwdet (see docs/architecture.md).

    Returns ``loss_cls`` (sigmoid focal loss on the class logits / number of positives),
    ``loss_box`` (``box_weight`` x GIoU loss weighted by the centerness target / the sum of those
    targets, >= 1) and ``loss_ctr`` (centerness BCE / number of positives); normalisers averaged
    over DDP ranks, the positive count clamped to >= 1.
    """

    def __init__(self, num_classes: int, *, topk: int = 9, anchor_scale: float = 8.0, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, box_weight: float = 2.0) -> None:
        super().__init__()
        check_atss_options(topk, anchor_scale)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.topk, self.anchor_scale = topk, anchor_scale
        self.focal_alpha, self.focal_gamma, self.box_weight = focal_alpha, focal_gamma, box_weight

    def assign(self, batch: Batch) -> Assignment:
        return assign_atss(batch, topk=self.topk, anchor_scale=self.anchor_scale)

    def terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        image, point, _ = a.entries(batch.labels)
        num_pos = num_positives(batch, a)
        loss_cls = focal_classification(batch, a, self.focal_alpha, self.focal_gamma)
        ctr_target = positive_centerness(batch, a)
        ctr_norm = reduce_mean(ctr_target.sum()).clamp(min=1.0)
        loss_box = self.box_weight * (ctr_target * a.bag.giou_loss[a.pairs]).sum() / ctr_norm
        loss_ctr = F.binary_cross_entropy_with_logits(batch.objectness[image, point], ctr_target, reduction="sum")
        return {"loss_cls": loss_cls / num_pos, "loss_box": loss_box, "loss_ctr": loss_ctr / num_pos}

    @torch.no_grad()
    def classification_weights(self, batch: Batch, a: Assignment) -> ClassWeights:
        """Table 1's weights of ``loss_cls`` (unnormalised): the focal loss on sigmoid(cls)."""
        return focal_weights(batch.cls.sigmoid(), a, batch.labels, self.focal_alpha, self.focal_gamma)


def check_atss_options(topk: int, anchor_scale: float) -> None:
    if not (isinstance(topk, int) and topk >= 1):
        raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
    check_positive("anchor_scale", anchor_scale)
