"""GFL (Li et al., NeurIPS 2020) on the point head, without the distribution head: ATSS positives,
the quality focal loss with IoU targets on the joint score, and GIoU weighted by the score.

The general distribution head (4 x 17 bins per point) and its distribution focal loss are left
out: every method of the comparison shares one head that regresses four distances, and the DW
paper's comparison (its tables 1 and 6) is about the classification weights, not the box
representation. docs/semantics.md has the formulas.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from torch import Tensor, nn

from dwdet.losses.atss import atss_positives, check_atss_options
from dwdet.losses.common import check_positive, joint_score_terms, prepare_batch, quality_focal_pos
from dwdet.utils.dist import reduce_mean


class GFLLoss(nn.Module):
    """GFL loss with the loss contract of dwdet (see docs/architecture.md).

    With ``s`` the joint score ``sigmoid(cls) * sigmoid(ctr)`` and ``y`` the IoU of a positive's
    predicted box with its GT (detached) at the GT's class, 0 elsewhere:

    * ``loss_cls`` = sum over all scores of ``BCE(s, y) |y - s|^beta`` / number of positives;
    * ``loss_box`` = ``box_weight`` x sum of ``w`` x GIoU loss / sum of ``w`` (>= 1), with ``w``
      the positive's largest score over the classes (detached).

    Normalisers averaged over DDP ranks, the positive count clamped to >= 1.
    """

    def __init__(self, num_classes: int, strides: Sequence[int] = (8, 16, 32, 64, 128), *, topk: int = 9,
                 anchor_scale: float = 8.0, beta: float = 2.0, box_weight: float = 2.0) -> None:
        super().__init__()
        check_atss_options(topk, anchor_scale)
        check_positive("beta", beta)
        self.num_classes, self.strides = num_classes, tuple(int(s) for s in strides)
        self.topk, self.anchor_scale, self.beta, self.box_weight = topk, anchor_scale, beta, box_weight

    def forward(self, cls_logits: List[Tensor], bbox_preds: List[Tensor], centerness: List[Tensor],
                targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        batch = prepare_batch("GFLLoss", self.num_classes, self.strides, cls_logits, bbox_preds, centerness, targets)
        bag = batch.bag
        pos = atss_positives(batch, self.topk, self.anchor_scale)
        image, point, label = bag.image_index[pos], bag.point_index[pos], batch.labels[bag.gt_index[pos]]
        neg, score = joint_score_terms(batch, image, point, label, gamma=self.beta, neg_weight=1.0)
        iou = bag.iou[pos].detach()
        num_pos = reduce_mean(batch.cls.new_tensor(float(len(pos)))).clamp(min=1.0)
        loss_cls = (neg + quality_focal_pos(score, iou, self.beta)) / num_pos
        weight = (batch.cls[image, point].amax(dim=1).sigmoid() * batch.ctr[image, point].sigmoid()).detach()
        loss_box = self.box_weight * (weight * bag.giou_loss[pos]).sum() / reduce_mean(weight.sum()).clamp(min=1.0)
        return {"loss_cls": loss_cls, "loss_box": loss_box}
