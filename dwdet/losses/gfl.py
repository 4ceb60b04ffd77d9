"""GFL (Li et al., NeurIPS 2020) on the point head, without the distribution head: ATSS positives,
the quality focal loss with IoU targets on the joint score, and GIoU weighted by the score.

The general distribution head (4 x 17 bins per point) and its distribution focal loss are left
out: every method of the comparison shares one head that regresses four distances, and the DW
paper's comparison (its tables 1 and 6) is about the classification weights, not the box
representation. docs/semantics.md has the formulas.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from dwdet.losses.atss import assign_atss, check_atss_options
from dwdet.losses.batch import Batch
from dwdet.losses.common import (Assignment, ClassWeights, PointLoss, check_positive, joint_score,
                                 joint_score_terms, num_positives, quality_focal_pos, soft_weights)
from dwdet.utils.dist import reduce_mean


class GFLLoss(PointLoss):
    """GFL loss with the loss contract of dwdet (see docs/architecture.md).

    With ``s`` the joint score ``sigmoid(cls) * sigmoid(objectness)`` and ``y`` the IoU of a positive's
    predicted box with its GT (detached) at the GT's class, 0 elsewhere:

    * ``loss_cls`` = sum over all scores of ``BCE(s, y) |y - s|^beta`` / number of positives;
    * ``loss_box`` = ``box_weight`` x sum of ``w`` x GIoU loss / sum of ``w`` (>= 1), with ``w``
      the positive's largest score over the classes (detached).

    Normalisers averaged over DDP ranks, the positive count clamped to >= 1.
    """

    def __init__(self, num_classes: int, *, topk: int = 9, anchor_scale: float = 8.0, beta: float = 2.0,
                 box_weight: float = 2.0) -> None:
        super().__init__()
        check_atss_options(topk, anchor_scale)
        check_positive("beta", beta)
        self.num_classes = num_classes
        self.topk, self.anchor_scale, self.beta, self.box_weight = topk, anchor_scale, beta, box_weight

    def assign(self, batch: Batch) -> Assignment:
        return assign_atss(batch, topk=self.topk, anchor_scale=self.anchor_scale)

    def terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        image, point, _ = a.entries(batch.labels)
        neg, score = joint_score_terms(batch, a, gamma=self.beta, neg_weight=1.0)
        iou = a.bag.iou[a.pairs].detach()
        num_pos = num_positives(batch, a)
        loss_cls = (neg + quality_focal_pos(score, iou, self.beta)) / num_pos
        weight = (batch.cls[image, point].amax(dim=1).sigmoid() * batch.objectness[image, point].sigmoid()).detach()
        box_norm = reduce_mean(weight.sum()).clamp(min=1.0)
        loss_box = self.box_weight * (weight * a.bag.giou_loss[a.pairs]).sum() / box_norm
        return {"loss_cls": loss_cls, "loss_box": loss_box}

    @torch.no_grad()
    def classification_weights(self, batch: Batch, a: Assignment) -> ClassWeights:
        """Table 1's weights of ``loss_cls`` (unnormalised): ``|y - s|^beta`` times (y, 1 - y)."""
        return qfl_weights(batch, a, a.bag.iou[a.pairs], self.beta)


def qfl_weights(batch: Batch, a: Assignment, y: Tensor, beta: float) -> ClassWeights:
    """The quality focal loss ``BCE(s, y) |y - s|^beta`` on the joint score, soft target ``y`` at the pairs."""
    score = joint_score(batch)
    image, point, label = a.entries(batch.labels)
    return soft_weights(score, a, batch.labels, y, (y - score[image, point, label]).abs().pow(beta),
                        score.pow(beta))
