"""VarifocalNet's loss (Zhang et al., CVPR 2021) on the point head, without the star-shaped box
refinement: ATSS positives, the varifocal loss with IoU-aware targets on the joint score, and
GIoU weighted by the IoU.

VFNet's star-shaped deformable convolution and its second (refined) box are left out, so that
every method of the comparison runs on the same head; DW's own box refinement
(``model.refine=True``) works with this loss as with the others. docs/semantics.md has the formulas.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from dwdet.losses.atss import assign_atss, check_atss_options
from dwdet.losses.batch import Batch
from dwdet.losses.common import (Assignment, ClassWeights, PointLoss, check_positive, joint_score,
                                 joint_score_terms, num_positives, soft_weights)
from dwdet.utils.dist import reduce_mean


class VFLLoss(PointLoss):
    """VFL loss with the loss contract of dwdet (see docs/architecture.md).

    With ``s`` the joint score ``sigmoid(cls) * sigmoid(objectness)`` and ``q`` the IoU of a positive's
    predicted box with its GT (detached, >= 1e-6):

    * ``loss_cls`` = (sum over positives of ``q BCE(s, q)`` at the GT's class + sum over all other
      scores of ``alpha s^gamma BCE(s, 0)``) / number of positives;
    * ``loss_box`` = ``box_weight`` x sum of ``q`` x GIoU loss / sum of ``q`` (>= 1).

    Normalisers averaged over DDP ranks, the positive count clamped to >= 1.
    """

    def __init__(self, num_classes: int, *, topk: int = 9, anchor_scale: float = 8.0, alpha: float = 0.75,
                 gamma: float = 2.0, box_weight: float = 2.0) -> None:
        super().__init__()
        check_atss_options(topk, anchor_scale)
        check_positive("alpha", alpha)
        check_positive("gamma", gamma)
        self.num_classes = num_classes
        self.topk, self.anchor_scale = topk, anchor_scale
        self.alpha, self.gamma, self.box_weight = alpha, gamma, box_weight

    def assign(self, batch: Batch) -> Assignment:
        return assign_atss(batch, topk=self.topk, anchor_scale=self.anchor_scale)

    def terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        neg, score = joint_score_terms(batch, a, gamma=self.gamma, neg_weight=self.alpha)
        quality = a.bag.iou[a.pairs].detach().clamp(min=1e-6)
        pos_cls = (quality * F.binary_cross_entropy(score, quality, reduction="none")).sum()
        num_pos = num_positives(batch, a)
        box_norm = reduce_mean(quality.sum()).clamp(min=1.0)
        return {"loss_cls": (neg + pos_cls) / num_pos,
                "loss_box": self.box_weight * (quality * a.bag.giou_loss[a.pairs]).sum() / box_norm}

    @torch.no_grad()
    def classification_weights(self, batch: Batch, a: Assignment) -> ClassWeights:
        """Table 1's weights of ``loss_cls`` (unnormalised): q (q, 1 - q) at the positives, alpha s^gamma elsewhere."""
        quality = a.bag.iou[a.pairs].clamp(min=1e-6)
        score = joint_score(batch)
        return soft_weights(score, a, batch.labels, quality, quality, self.alpha * score.pow(self.gamma))
