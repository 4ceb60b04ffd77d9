"""VarifocalNet's loss (Zhang et al., CVPR 2021) on the point head, without the star-shaped box
refinement: ATSS positives, the varifocal loss with IoU-aware targets on the joint score, and
GIoU weighted by the IoU.

VFNet's star-shaped deformable convolution and its second (refined) box are left out, so that
every method of the comparison runs on the same head; DW's own box refinement
(``model.refine=True``) works with this loss as with the others. docs/semantics.md has the formulas.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from dwdet.losses.atss import atss_positives, check_atss_options
from dwdet.losses.common import check_positive, joint_score_terms, prepare_batch
from dwdet.utils.dist import reduce_mean


class VFLLoss(nn.Module):
    """VFL loss with the loss contract of dwdet (see docs/architecture.md).

    With ``s`` the joint score ``sigmoid(cls) * sigmoid(ctr)`` and ``q`` the IoU of a positive's
    predicted box with its GT (detached, >= 1e-6):

    * ``loss_cls`` = (sum over positives of ``q BCE(s, q)`` at the GT's class + sum over all other
      scores of ``alpha s^gamma BCE(s, 0)``) / number of positives;
    * ``loss_box`` = ``box_weight`` x sum of ``q`` x GIoU loss / sum of ``q`` (>= 1).

    Normalisers averaged over DDP ranks, the positive count clamped to >= 1.
    """

    def __init__(self, num_classes: int, strides: Sequence[int] = (8, 16, 32, 64, 128), *, topk: int = 9,
                 anchor_scale: float = 8.0, alpha: float = 0.75, gamma: float = 2.0, box_weight: float = 2.0) -> None:
        super().__init__()
        check_atss_options(topk, anchor_scale)
        check_positive("alpha", alpha)
        check_positive("gamma", gamma)
        self.num_classes, self.strides = num_classes, tuple(int(s) for s in strides)
        self.topk, self.anchor_scale = topk, anchor_scale
        self.alpha, self.gamma, self.box_weight = alpha, gamma, box_weight

    def forward(self, cls_logits: List[Tensor], bbox_preds: List[Tensor], centerness: List[Tensor],
                targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        batch = prepare_batch("VFLLoss", self.num_classes, self.strides, cls_logits, bbox_preds, centerness, targets)
        bag = batch.bag
        pos = atss_positives(batch, self.topk, self.anchor_scale)
        image, point, label = bag.image_index[pos], bag.point_index[pos], batch.labels[bag.gt_index[pos]]
        neg, score = joint_score_terms(batch, image, point, label, gamma=self.gamma, neg_weight=self.alpha)
        quality = bag.iou[pos].detach().clamp(min=1e-6)
        pos_cls = (quality * F.binary_cross_entropy(score, quality, reduction="none")).sum()
        num_pos = reduce_mean(batch.cls.new_tensor(float(len(pos)))).clamp(min=1.0)
        box_norm = reduce_mean(quality.sum()).clamp(min=1.0)
        return {"loss_cls": (neg + pos_cls) / num_pos,
                "loss_box": self.box_weight * (quality * bag.giou_loss[pos]).sum() / box_norm}
