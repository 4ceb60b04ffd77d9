"""The FCOS baseline loss of the DW paper's table 6 (38.6 AP).

FCOS with center sampling (radius 1.5 strides), per-level regression ranges and the
minimum-area GT for ambiguous points; sigmoid focal loss, GIoU loss weighted by the centerness
target, and centerness BCE on the reg-tower centerness branch (as mmdetection's
``fcos_center-normbbox-centeronreg-giou`` recipe).
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_area, generalized_box_iou_loss

from dwdet.losses.batch import Batch
from dwdet.losses.common import (Assignment, ClassWeights, PointLoss, candidate_bags, focal_classification,
                                 focal_weights, hard_assignment, num_positives, one_gt_per_point)
from dwdet.utils.dist import reduce_mean

DEFAULT_REGRESS_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))


def assign_fcos(batch: Batch, *, center_radius: Optional[float] = 1.5,
                regress_ranges: Sequence[Tuple[float, float]] = DEFAULT_REGRESS_RANGES) -> Assignment:
    """FCOS label assignment of a batch.

    A point is a candidate of GT g when it lies strictly inside g's center region (the square of
    half-side ``center_radius * stride`` around the box center, clipped to the box; the whole box
    when ``center_radius`` is None) and the largest of its distances to g's sides is within its
    level's regression range ``(low, high)`` (both ends included; one range per level). A point
    with several candidates takes the GT of minimum area, ties to the lower GT index.
    """
    bag = candidate_bags(batch)
    point, gt = bag.point_index, bag.gt_index
    candidate = torch.ones_like(gt, dtype=torch.bool)  # a bag pair: strictly inside the box
    if center_radius is not None:
        (x, y), box = batch.points[point].unbind(1), batch.gt_boxes[gt]
        x1, y1, x2, y2 = box.unbind(1)
        radius = batch.strides[point] * center_radius
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        region = torch.stack((x - torch.maximum(cx - radius, x1), y - torch.maximum(cy - radius, y1),
                              torch.minimum(cx + radius, x2) - x, torch.minimum(cy + radius, y2) - y), dim=1)
        candidate = region.amin(dim=1) > 0
    candidate &= within_regress_ranges(batch, point, gt, regress_ranges)
    pairs = candidate.nonzero().squeeze(1)
    entry = bag.image_index[pairs] * batch.num_points + point[pairs]
    pairs = pairs[one_gt_per_point(entry, -box_area(batch.gt_boxes)[gt[pairs]], gt[pairs])]
    return hard_assignment(batch, bag, pairs)


def within_regress_ranges(batch: Batch, point: Tensor, gt: Tensor,
                          regress_ranges: Sequence[Tuple[float, float]]) -> Tensor:
    """Whether the largest distance from each point to its GT's sides lies within its level's
    regression range ``(low, high)``, both ends included (FCOS's assignment of sizes to levels)."""
    if len(regress_ranges) != len(batch.level_strides):
        raise ValueError(f"got {len(regress_ranges)} regress_ranges for {len(batch.level_strides)} levels "
                         f"(strides {batch.level_strides})")
    reach = gt_distances(batch, point, gt).amax(dim=1)
    ranges = batch.per_point(regress_ranges)[point]
    return (reach >= ranges[:, 0]) & (reach <= ranges[:, 1])


def gt_distances(batch: Batch, point: Tensor, gt: Tensor) -> Tensor:
    """(K, 4) (l, t, r, b) distances from points to the sides of GTs."""
    xy, box = batch.points[point], batch.gt_boxes[gt]
    return torch.cat((xy - box[:, :2], box[:, 2:] - xy), dim=1)


def centerness_target(distances: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of (K, 4) distances."""
    left_right, top_bottom = distances[:, 0::2], distances[:, 1::2]
    ratio = (left_right.amin(1) / left_right.amax(1)) * (top_bottom.amin(1) / top_bottom.amax(1))
    return ratio.sqrt()


def distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """(K, 4) xyxy boxes from (K, 2) points and (K, 4) (l, t, r, b) distances."""
    return torch.cat((points - distances[:, :2], points + distances[:, 2:]), dim=1)


class FCOSLoss(PointLoss):
    """FCOS loss with the loss contract of dwdet (see docs/architecture.md).

    Returns ``loss_cls`` (focal loss / number of positives), ``loss_box`` (GIoU loss weighted by
    the centerness target / sum of those weights) and ``loss_ctr`` (centerness BCE / number of
    positives); the normalisers are averaged over DDP ranks.
    """

    def __init__(self, num_classes: int, regress_ranges: Sequence[Tuple[float, float]] = DEFAULT_REGRESS_RANGES,
                 center_radius: Optional[float] = 1.5, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.regress_ranges = tuple(tuple(map(float, r)) for r in regress_ranges)
        self.center_radius = center_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def assign(self, batch: Batch) -> Assignment:
        return assign_fcos(batch, center_radius=self.center_radius, regress_ranges=self.regress_ranges)

    def terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        image, point, _ = a.entries(batch.labels)
        num_pos = num_positives(batch, a)
        loss_cls = focal_classification(batch, a, self.focal_alpha, self.focal_gamma) / num_pos

        xy = batch.points[point]
        target_dist = gt_distances(batch, point, a.bag.gt_index[a.pairs])
        ctr_target = centerness_target(target_dist)
        ctr_normalizer = reduce_mean(ctr_target.sum()).clamp(min=1e-6)
        giou_loss = generalized_box_iou_loss(distances_to_boxes(xy, batch.dist[image, point]),
                                             distances_to_boxes(xy, target_dist))
        loss_box = (giou_loss * ctr_target).sum() / ctr_normalizer
        loss_ctr = F.binary_cross_entropy_with_logits(batch.objectness[image, point], ctr_target,
                                                      reduction="sum") / num_pos
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}

    @torch.no_grad()
    def classification_weights(self, batch: Batch, a: Assignment) -> ClassWeights:
        """Table 1's weights of ``loss_cls`` (unnormalised): the focal loss on sigmoid(cls)."""
        return focal_weights(batch.cls.sigmoid(), a, batch.labels, self.focal_alpha, self.focal_gamma)
