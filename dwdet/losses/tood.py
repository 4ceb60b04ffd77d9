"""TOOD's task-aligned learning (Feng et al., ICCV 2021) on the point head, without the T-head:
the task-aligned assigner, the quality focal loss with its normalised alignment targets on the joint
score, GIoU weighted by them, and the ATSS warm-up of the first epochs.

The T-head (task-interactive features, layer attention, task-aligned predictors) is left out: all
methods of the comparison share one head. DW's box refinement (``model.refine=True``) plays the part
of TOOD's regression alignment if wanted. docs/semantics.md has the formulas.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

import dw_ops
from dwdet.losses.atss import assign_atss, check_atss_options, positive_centerness
from dwdet.losses.batch import Batch
from dwdet.losses.common import (Assignment, ClassWeights, EpochWarmup, PointLoss, candidate_bags, check_epochs,
                                 check_positive, focal_weights, hard_assignment, joint_score, joint_score_terms,
                                 num_positives, one_gt_per_point, quality_focal_pos, rank_in_group)
from dwdet.losses.gfl import qfl_weights
from dwdet.utils.dist import reduce_mean


def assign_task_aligned(batch: Batch, *, topk: int = 13, alpha: float = 1.0, beta: float = 6.0) -> Assignment:
    """Task-aligned assignment of a batch.

    Each bag pair (a point strictly inside a GT) gets ``t = s^alpha IoU^beta``, with ``s`` the
    joint score of the GT's class at the point and IoU that of its predicted box. Each GT's
    ``topk`` pairs of largest ``t`` (over all levels; ties to the lower point index) with ``t > 0``
    are its positives; a point positive for several GTs goes to the one of highest IoU. Per GT,
    the targets are ``t / (max t + 1e-7) * max IoU`` over its positives.
    """
    bag = candidate_bags(batch)
    iou = bag.iou.detach()
    score = dw_ops.pair_scores(bag, batch.cls, batch.objectness, batch.labels)
    alignment = score.detach().pow(alpha) * iou.pow(beta)
    rank = rank_in_group(bag.gt_index, -alignment)
    pair = ((rank < topk) & (alignment > 0)).nonzero().squeeze(1)
    entry = bag.image_index[pair] * batch.num_points + bag.point_index[pair]
    pair = pair[one_gt_per_point(entry, iou[pair], bag.gt_index[pair])]
    gt, t, pair_iou = bag.gt_index[pair], alignment[pair], iou[pair]
    num_gts = bag.gt_image.numel()
    max_t = t.new_zeros(num_gts).scatter_reduce(0, gt, t, "amax", include_self=False)
    max_iou = t.new_zeros(num_gts).scatter_reduce(0, gt, pair_iou, "amax", include_self=False)
    return hard_assignment(batch, bag, pair, target=t / (max_t[gt] + 1e-7) * max_iou[gt])


class TOODLoss(EpochWarmup, PointLoss):
    """TOOD loss with the loss contract of dwdet (see docs/architecture.md).

    With ``s`` the joint score ``sigmoid(cls) * sigmoid(objectness)`` and ``t^`` the normalised alignment
    target of a positive (:func:`assign_task_aligned`) at its GT's class, 0 elsewhere:

    * ``loss_cls`` = sum over all scores of ``BCE(s, t^) |t^ - s|^beta_qfl`` / sum of t^ (>= 1);
    * ``loss_box`` = ``box_weight`` x sum of ``t^`` x GIoU loss / sum of t^ (>= 1).

    During the first ``warmup_epochs`` (the trainer calls :meth:`set_epoch`), the positives are
    ATSS's (``atss_topk``) and the losses are the focal loss on ``s`` (``focal_alpha``,
    ``focal_gamma``) / number of positives and the GIoU loss weighted by the centerness target /
    its sum (>= 1). A loss that was never told the epoch is past the warm-up (a trained model).
    Normalisers averaged over DDP ranks.
    """

    def __init__(self, num_classes: int, *, topk: int = 13, alpha: float = 1.0, beta: float = 6.0,
                 qfl_beta: float = 2.0, box_weight: float = 2.0, warmup_epochs: int = 4, atss_topk: int = 9,
                 anchor_scale: float = 8.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        if not (isinstance(topk, int) and topk >= 1):
            raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
        check_epochs("warmup_epochs", warmup_epochs)
        check_atss_options(atss_topk, anchor_scale)
        for name, value in (("alpha", alpha), ("beta", beta), ("qfl_beta", qfl_beta), ("focal_gamma", focal_gamma)):
            check_positive(name, value)
        self.num_classes = num_classes
        self.topk, self.alpha, self.beta, self.qfl_beta, self.box_weight = topk, alpha, beta, qfl_beta, box_weight
        self.warmup_epochs, self.atss_topk, self.anchor_scale = warmup_epochs, atss_topk, anchor_scale
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def assign(self, batch: Batch) -> Assignment:
        if self.warming_up:
            return assign_atss(batch, topk=self.atss_topk, anchor_scale=self.anchor_scale)
        return assign_task_aligned(batch, topk=self.topk, alpha=self.alpha, beta=self.beta)

    def terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        if self.warming_up:
            return self._warmup_terms(batch, a)
        neg, score = joint_score_terms(batch, a, gamma=self.qfl_beta, neg_weight=1.0)
        norm = reduce_mean(a.target.sum()).clamp(min=1.0)
        loss_cls = (neg + quality_focal_pos(score, a.target, self.qfl_beta)) / norm
        loss_box = self.box_weight * (a.target * a.bag.giou_loss[a.pairs]).sum() / norm
        return {"loss_cls": loss_cls, "loss_box": loss_box}

    def _warmup_terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        neg, score = joint_score_terms(batch, a, gamma=self.focal_gamma, neg_weight=1.0 - self.focal_alpha)
        ones = torch.ones_like(score)
        pos_cls = self.focal_alpha * ((1 - score).pow(self.focal_gamma)
                                      * F.binary_cross_entropy(score, ones, reduction="none")).sum()
        num_pos = num_positives(batch, a)
        ctr_target = positive_centerness(batch, a)
        ctr_norm = reduce_mean(ctr_target.sum()).clamp(min=1.0)
        loss_box = self.box_weight * (ctr_target * a.bag.giou_loss[a.pairs]).sum() / ctr_norm
        return {"loss_cls": (neg + pos_cls) / num_pos, "loss_box": loss_box}

    @torch.no_grad()
    def classification_weights(self, batch: Batch, a: Assignment) -> ClassWeights:
        """Table 1's weights of ``loss_cls`` (unnormalised): as GFL's with t^ for the IoU (the warm-up:
        the focal loss on the joint score)."""
        if self.warming_up:
            return focal_weights(joint_score(batch), a, batch.labels, self.focal_alpha, self.focal_gamma)
        return qfl_weights(batch, a, a.target, self.qfl_beta)
