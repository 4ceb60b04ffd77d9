"""The FCOS baseline loss of the DW paper's table 6 (38.6 AP).

FCOS with center sampling (radius 1.5 strides), per-level regression ranges and the
minimum-area GT for ambiguous points; sigmoid focal loss, GIoU loss weighted by the centerness
target, and centerness BCE on the reg-tower centerness branch (as mmdetection's
``fcos_center-normbbox-centeronreg-giou`` recipe).
"""
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_area, generalized_box_iou_loss, sigmoid_focal_loss

from dwdet.models.points import anchor_points, flatten_levels
from dwdet.utils.dist import reduce_mean

DEFAULT_REGRESS_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))


class FCOSTargets(NamedTuple):
    """Per-point training targets of one image."""

    labels: Tensor  # (P,) int64 class of the assigned GT, -1 for negatives
    distances: Tensor  # (P, 4) (l, t, r, b) to the assigned GT in pixels (meaningful for positives)


def assign_fcos(points: Tensor, strides: Tensor, regress_ranges: Tensor, boxes: Tensor, labels: Tensor,
                center_radius: Optional[float] = 1.5) -> FCOSTargets:
    """FCOS label assignment of one image.

    A point is a candidate of GT g when it lies strictly inside g's center region (the square of
    half-side ``center_radius * stride`` around the box center, clipped to the box; the whole box
    when ``center_radius`` is None) and the largest of its distances to g's sides is within its
    level's regression range. A point with several candidates takes the GT of minimum area.

    Args:
        points: (P, 2) anchor points (x, y); strides: (P,); regress_ranges: (P, 2) (low, high].
        boxes: (G, 4) xyxy GT boxes; labels: (G,) their classes.
    """
    num_points = len(points)
    if len(boxes) == 0:
        return FCOSTargets(labels.new_full((num_points,), -1), points.new_zeros((num_points, 4)))
    x, y = points[:, 0, None], points[:, 1, None]  # (P, 1) against (G,) -> (P, G)
    x1, y1, x2, y2 = boxes.unbind(1)
    distances = torch.stack((x - x1, y - y1, x2 - x, y2 - y), dim=2)  # (P, G, 4)
    if center_radius is None:
        inside = distances.amin(dim=2) > 0
    else:
        radius = strides[:, None] * center_radius
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        region = torch.stack((x - torch.maximum(cx - radius, x1), y - torch.maximum(cy - radius, y1),
                              torch.minimum(cx + radius, x2) - x, torch.minimum(cy + radius, y2) - y), dim=2)
        inside = region.amin(dim=2) > 0
    reach = distances.amax(dim=2)
    in_range = (reach >= regress_ranges[:, 0, None]) & (reach <= regress_ranges[:, 1, None])
    areas = box_area(boxes).expand(num_points, -1).masked_fill(~(inside & in_range), math.inf)
    min_area, gt_index = areas.min(dim=1)
    assigned = torch.where(min_area < math.inf, labels[gt_index], -1)
    return FCOSTargets(assigned, distances[torch.arange(num_points, device=points.device), gt_index])


def centerness_target(distances: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of (K, 4) distances."""
    left_right, top_bottom = distances[:, 0::2], distances[:, 1::2]
    ratio = (left_right.amin(1) / left_right.amax(1)) * (top_bottom.amin(1) / top_bottom.amax(1))
    return ratio.sqrt()


def distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """(K, 4) xyxy boxes from (K, 2) points and (K, 4) (l, t, r, b) distances."""
    return torch.cat((points - distances[:, :2], points + distances[:, 2:]), dim=1)


class FCOSLoss(nn.Module):
    """FCOS loss with the loss contract of dwdet (see docs/architecture.md).

    Returns ``loss_cls`` (focal loss / number of positives), ``loss_box`` (GIoU loss weighted by
    the centerness target / sum of those weights) and ``loss_ctr`` (centerness BCE / number of
    positives); the normalisers are averaged over DDP ranks.
    """

    def __init__(self, num_classes: int, strides: Sequence[int] = (8, 16, 32, 64, 128),
                 regress_ranges: Sequence[Tuple[float, float]] = DEFAULT_REGRESS_RANGES,
                 center_radius: Optional[float] = 1.5, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        if len(regress_ranges) != len(strides):
            raise ValueError(f"got {len(regress_ranges)} regress_ranges for {len(strides)} strides (one per level)")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.regress_ranges = tuple(tuple(map(float, r)) for r in regress_ranges)
        self.center_radius = center_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def forward(self, cls_logits: List[Tensor], bbox_preds: List[Tensor], centerness: List[Tensor],
                targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        if not len(cls_logits) == len(bbox_preds) == len(centerness) == len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels (strides {self.strides}), got "
                             f"{len(cls_logits)} cls, {len(bbox_preds)} box and {len(centerness)} centerness maps")
        if cls_logits[0].shape[1] != self.num_classes:
            raise ValueError(f"cls_logits have {cls_logits[0].shape[1]} channels but num_classes is {self.num_classes}")
        if len(targets) != len(cls_logits[0]):
            raise ValueError(f"got {len(targets)} targets for a batch of {len(cls_logits[0])} images")
        cls, dist, ctr = flatten_levels(cls_logits), flatten_levels(bbox_preds), flatten_levels(centerness)[..., 0]
        points, labels, target_dist = self.assign([c.shape[-2:] for c in cls_logits], targets, dist)

        positive = labels >= 0
        num_pos = reduce_mean(positive.sum().to(cls.dtype)).clamp(min=1.0)
        one_hot = F.one_hot(labels.clamp(min=0), self.num_classes).to(cls.dtype) * positive[..., None]
        loss_cls = sigmoid_focal_loss(cls, one_hot, self.focal_alpha, self.focal_gamma, reduction="sum") / num_pos

        pos_points = points.expand(len(targets), -1, -1)[positive]
        pos_target_dist = target_dist[positive]
        ctr_target = centerness_target(pos_target_dist)
        ctr_normalizer = reduce_mean(ctr_target.sum()).clamp(min=1e-6)
        giou_loss = generalized_box_iou_loss(distances_to_boxes(pos_points, dist[positive]),
                                             distances_to_boxes(pos_points, pos_target_dist))
        loss_box = (giou_loss * ctr_target).sum() / ctr_normalizer
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[positive], ctr_target, reduction="sum") / num_pos
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}

    @torch.no_grad()
    def assign(self, feature_sizes: Sequence[Tuple[int, int]], targets: List[Dict[str, Tensor]], like: Tensor
               ) -> Tuple[Tensor, Tensor, Tensor]:
        """Anchor points (P, 2) and the batch's (N, P) labels (-1: negative) and (N, P, 4) distances."""
        points, strides = anchor_points(feature_sizes, self.strides, like.device, like.dtype)
        level_sizes = [h * w for h, w in feature_sizes]
        ranges = torch.tensor(self.regress_ranges, device=like.device, dtype=like.dtype)
        ranges = ranges.repeat_interleave(torch.tensor(level_sizes, device=like.device), dim=0)
        assigned = [assign_fcos(points, strides, ranges, t["boxes"].to(like), t["labels"].to(like.device),
                                self.center_radius) for t in targets]
        return points, torch.stack([a.labels for a in assigned]), torch.stack([a.distances for a in assigned])
