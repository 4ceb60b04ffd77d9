"""Dual Weighting loss (Li et al., CVPR 2022) on top of the fused dw_ops operators.

The default reproduces the released 41.5-AP model (see docs/semantics.md); ``variant="paper"``
follows equations 3-8 and 11-12 of the paper literally. The ablations of the paper's tables 4
(candidate bag) and 5 (negative weighting) are options.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import dw_ops
from dwdet.losses.batch import Batch
from dwdet.losses.common import (Assignment, ClassWeights, EpochWarmup, PointLoss, candidate_bags, check_epochs,
                                 joint_score, rank_in_group)
from dwdet.losses.fcos import (DEFAULT_REGRESS_RANGES, FCOSLoss, centerness_target, gt_distances,
                               within_regress_ranges)
from dwdet.utils.dist import reduce_mean

CENTER_PRIORS = ("soft", "hard", "threshold", "topk")
NEG_WEIGHTINGS = ("pneg_ineg", "pneg", "ineg", "one_minus_wpos", "none")
VARIANTS = ("released", "paper")
POS_CLS_TARGETS = ("one", "iou")
# the objectness term's name in the losses, per target besides "none"
OBJECTNESS_TERMS = {"centerness": "loss_ctr", "iou": "loss_obj_iou"}
OBJECTNESS_TARGETS = ("none", *OBJECTNESS_TERMS)
BAG_LEVELS = ("all", "fcos_ranges")


def assign_dw(batch: Batch, *, variant: str = "released", beta: float = 5.0, mu: float = 5.0,
              mu_den: float | None = None, gamma1: float = 2.0, center_prior: str = "soft", sigma: float = 1.11,
              prior_threshold: float = 1.7, prior_topk: int = 9, bag_levels: str = "all") -> Assignment:
    """DW's label assignment of a batch: every pair of the candidate bags, with its dual weights
    (``dw_ops.dual_weights``): w_pos per pair, P_neg per score entry of a bag (see :class:`DWLoss`)."""
    _check_choice("center_prior", center_prior, CENTER_PRIORS)
    _check_choice("bag_levels", bag_levels, BAG_LEVELS)
    bag = candidate_bags(batch, sigma=sigma, hard_prior=center_prior == "hard")
    if center_prior in ("threshold", "topk"):
        bag = _select_bag(batch, bag, prior_threshold if center_prior == "threshold" else None, prior_topk)
    if bag_levels == "fcos_ranges":
        within = within_regress_ranges(batch, bag.point_index, bag.gt_index, DEFAULT_REGRESS_RANGES)
        bag = _bag_subset(bag, within, bag.prior[within])
    score = dw_ops.pair_scores(bag, batch.cls, batch.objectness, batch.labels)
    weights = dw_ops.dual_weights(bag, score, batch.labels, batch.num_points, batch.num_classes, pos_mode=variant,
                                  beta=beta, mu=mu, mu_den=mu_den, neg_mode=variant, gamma1=gamma1)
    pairs = torch.arange(len(score), device=score.device)
    return Assignment(bag, pairs, weights.pos_weight, torch.ones_like(score.detach()), weights.neg_index,
                      weights.neg_prob)


def _select_bag(batch: Batch, bag: dw_ops.BagPairs, threshold: float | None, topk: int) -> dw_ops.BagPairs:
    """Table 4's hard candidate bags: the pairs nearer the GT center than ``threshold`` strides, or
    else the ``topk`` nearest of each level, with prior 1."""
    strides = batch.strides
    centers = (batch.gt_boxes[:, :2] + batch.gt_boxes[:, 2:]) / 2
    offset = (batch.points[bag.point_index] - centers[bag.gt_index]) / strides[bag.point_index, None]
    distance = offset.norm(dim=1)
    if threshold is not None:
        keep = distance < threshold
    else:
        level = torch.bucketize(strides[bag.point_index], strides.new_tensor(batch.level_strides))
        keep = rank_in_group(bag.gt_index * len(batch.level_strides) + level, distance) < topk
    return _bag_subset(bag, keep, torch.ones_like(bag.prior[keep]))


def _bag_subset(bag: dw_ops.BagPairs, keep: Tensor, prior: Tensor) -> dw_ops.BagPairs:
    """The pairs ``keep`` (a mask) of ``bag``, with ``prior`` as their center prior."""
    gt_index = bag.gt_index[keep]
    counts = torch.bincount(gt_index, minlength=bag.gt_image.numel())
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return dw_ops.BagPairs(gt_index, bag.point_index[keep], bag.image_index[keep], offsets, bag.gt_image,
                           prior, bag.iou[keep], bag.giou_loss[keep])


class DWLoss(EpochWarmup, PointLoss):
    """DW loss: ``loss(batch)`` -> dict of loss terms, on the joint score ``s = sigmoid(cls) sigmoid(objectness)``.

    Args:
        num_classes: C.
        variant: ``"released"`` (default; what the published checkpoints used) or ``"paper"``.
        beta, mu: the consistency exponent (eq. 3; in the released variant the weight of the GIoU
            loss in ``exp(-beta (1 - GIoU))``) and the positive-weight modulation (eq. 4).
        mu_den: exponent of the per-GT normaliser; defaults to 3 (released) or ``mu`` (paper).
        gamma1, gamma2: P_neg curvature (eq. 6, paper variant) and I_neg = s^gamma2 (eq. 7).
        center_prior: ``"soft"`` Gaussian (sigma in stride units), ``"hard"`` (soft > 0.3),
            ``"threshold"`` (distance to the GT center below ``prior_threshold`` strides) or
            ``"topk"`` (the ``prior_topk`` nearest points per FPN level), table 4.
        neg_weighting: table 5: ``"pneg_ineg"`` (P_neg * I_neg, default), ``"pneg"`` (P_neg only),
            ``"ineg"`` (I_neg only), ``"one_minus_wpos"`` (1 - w_pos in the bag) or ``"none"``
            (no negative weight in the bag). Outside the bag every score keeps I_neg
            (the focal term of the paper variant).
        pos_reweight: factor of both positive terms (released: 0.25; paper: 1).
        pos_cls_target: what the positive classification term pulls a bag pair's joint score
            towards: ``"one"`` (both variants) or ``"iou"``, the IoU of the pair's predicted box with
            its GT (no gradient), so that the score learns how well its box fits, as the quality
            targets of GFL and VarifocalNet do (docs/studies/patterns80.md: DW's ranking).
        focal_alpha: the paper variant's focal loss outside the bag is ``(1 - alpha) s^gamma2 BCE``.
        neg_scale: factor of the negative term (1: the released loss; larger values test how much
            background pressure the detector needs, see docs/studies/synthetic128.md).
        neg_reference_scores: None (default) keeps the released normaliser. A number S_ref makes
            the negative term's strength follow the (point, class) scores per object of the batch,
            S = N * P * C / (number of GTs): it is multiplied by ``(S_ref / S) ** neg_reference_power``,
            so that it keeps the released strength at S = S_ref (COCO: about 2.4e5) and grows on
            data with fewer scores per object (smaller images, fewer classes, more objects).
        neg_reference_power: the exponent of that factor (0.5: the square root, chosen from the
            ``neg_scale`` runs at 530 and 1.4e5 scores per object; 1: a strength per object
            independent of S, which the same runs rule out). See docs/studies/synthetic128.md.
        bag_levels: ``"all"`` (both variants: a GT's bag holds its points of every FPN level) or
            ``"fcos_ranges"``: only the points whose largest distance to the GT's sides lies in their
            level's FCOS regression range, so that each object size is learnt on the levels FCOS
            gives it.
        objectness_target: ``"none"`` (both variants: the objectness logit learns only through the
            joint score) or ``"centerness"``: besides, FCOS's centerness BCE pulls it towards each
            bag point's centerness in its GT (``loss_ctr``, the mean over the bag's pairs), a target
            from geometry alone, where every other target of DW comes from the predictions; or
            ``"iou"``: the same BCE towards the IoU of the pair's predicted box with its GT (a
            target, not a path to the boxes; ``loss_obj_iou``), so that the objectness, and with it
            the joint score, follows how well each box fits (as PAA's IoU branch does).
        fcos_warmup_epochs: 0 (both variants: DW's weights from the first step) or the number of
            first epochs trained with FCOS's loss instead (:class:`FCOSLoss`: its assignment, the
            focal loss on the class logits, its centerness target on the objectness), so that DW's
            weights, computed from the predictions, start from a detector rather than from noise.
            The trainer calls :meth:`set_epoch`; a loss never told the epoch (a trained model) is DW's.

    Normalisers (both variants): the positive terms by the number of GTs in the batch, the
    negative term by sum(1 - P_neg), each averaged over DDP ranks and clamped to >= 1.
    """

    def __init__(self, num_classes: int, *, variant: str = "released", beta: float = 5.0, mu: float = 5.0,
                 mu_den: float | None = None, gamma1: float = 2.0, gamma2: float = 2.0, center_prior: str = "soft",
                 sigma: float = 1.11, prior_threshold: float = 1.7, prior_topk: int = 9,
                 neg_weighting: str = "pneg_ineg", pos_reweight: float | None = None, pos_cls_target: str = "one",
                 focal_alpha: float = 0.25, neg_scale: float = 1.0, neg_reference_scores: float | None = None,
                 neg_reference_power: float = 0.5, objectness_target: str = "none", bag_levels: str = "all",
                 fcos_warmup_epochs: int = 0):
        super().__init__()
        _check_choice("variant", variant, VARIANTS)
        _check_choice("bag_levels", bag_levels, BAG_LEVELS)
        _check_choice("objectness_target", objectness_target, OBJECTNESS_TARGETS)
        _check_choice("center_prior", center_prior, CENTER_PRIORS)
        _check_choice("neg_weighting", neg_weighting, NEG_WEIGHTINGS)
        _check_choice("pos_cls_target", pos_cls_target, POS_CLS_TARGETS)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not neg_scale > 0:
            raise ValueError(f"neg_scale must be > 0, got {neg_scale}")
        if neg_reference_scores is not None and not neg_reference_scores > 0:
            raise ValueError(f"neg_reference_scores must be > 0 or None, got {neg_reference_scores}")
        if not neg_reference_power >= 0:
            raise ValueError(f"neg_reference_power must be >= 0, got {neg_reference_power}")
        check_epochs("fcos_warmup_epochs", fcos_warmup_epochs)
        self.num_classes = num_classes
        self.neg_scale = float(neg_scale)
        self.neg_reference_scores = None if neg_reference_scores is None else float(neg_reference_scores)
        self.neg_reference_power = float(neg_reference_power)
        self.variant = variant
        self.beta, self.mu, self.gamma1, self.gamma2 = beta, mu, gamma1, gamma2
        self.mu_den = mu_den if mu_den is not None else (3.0 if variant == "released" else mu)
        self.center_prior, self.sigma = center_prior, sigma
        self.prior_threshold, self.prior_topk = prior_threshold, prior_topk
        self.neg_weighting = neg_weighting
        self.pos_reweight = pos_reweight if pos_reweight is not None else (0.25 if variant == "released" else 1.0)
        self.pos_cls_target = pos_cls_target
        self.objectness_target = objectness_target
        self.bag_levels = bag_levels
        self.warmup_epochs = fcos_warmup_epochs
        self.warmup_loss = FCOSLoss(num_classes) if fcos_warmup_epochs else None
        # The released model applies s^2 BCE to every score; the paper uses focal loss outside the bag.
        self.neg_base_weight = 1.0 if variant == "released" else 1.0 - focal_alpha

    def assign(self, batch: Batch) -> Assignment:
        if self.warming_up:
            return self.warmup_loss.assign(batch)
        a = assign_dw(batch, variant=self.variant, beta=self.beta, mu=self.mu, mu_den=self.mu_den,
                      gamma1=self.gamma1, center_prior=self.center_prior, sigma=self.sigma,
                      prior_threshold=self.prior_threshold, prior_topk=self.prior_topk, bag_levels=self.bag_levels)
        return a._replace(target=a.bag.iou.to(a.target.dtype)) if self.pos_cls_target == "iou" else a

    def terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        if self.warming_up:
            return self.warmup_loss.terms(batch, a)
        cls, bag, w_pos = batch.cls, a.bag, a.w_pos
        score = dw_ops.pair_scores(bag, cls, batch.objectness, batch.labels)
        ones = torch.ones_like(score)
        pos_cls = (w_pos * F.binary_cross_entropy(score, a.target, reduction="none")).sum()
        if self.variant == "released":  # BCE(exp(-beta L), 1) = beta L, as the released code writes it
            pos_loc = (w_pos * F.binary_cross_entropy(torch.exp(-self.beta * bag.giou_loss), ones,
                                                      reduction="none")).sum()
        else:  # eq. 11: beta * sum w_pos GIoU loss
            pos_loc = self.beta * (w_pos * bag.giou_loss).sum()
        index, value, gamma_in = self._bag_neg_weights(batch, a)
        neg = dw_ops.neg_loss(cls, batch.objectness, index, value, gamma=self.gamma2, gamma_in=gamma_in,
                              base_weight=self.neg_base_weight)

        num_gts = reduce_mean(cls.new_full((), float(batch.labels.numel()))).clamp(min=1.0)  # filled, not copied: no wait
        neg_norm = reduce_mean((1 - a.w_neg).sum().to(cls.dtype)).clamp(min=1.0)
        loss_neg = self.neg_scale * neg / neg_norm
        if self.neg_reference_scores is not None:
            loss_neg = loss_neg * self._pressure_factor(cls, num_gts)
        terms = {"loss_cls_pos": self.pos_reweight * pos_cls / num_gts,
                 "loss_loc": self.pos_reweight * pos_loc / num_gts,
                 "loss_cls_neg": loss_neg}
        if self.objectness_target != "none":
            terms[OBJECTNESS_TERMS[self.objectness_target]] = self._objectness_term(batch, bag)
        return terms

    def _objectness_term(self, batch: Batch, bag: dw_ops.BagPairs) -> Tensor:
        """BCE of the objectness logit at every bag pair towards the pair's target (its centerness in
        its GT, or its box's IoU), over the number of pairs (averaged over ranks). Bag points lie
        inside their GT, so the distances are >= 0."""
        if self.objectness_target == "centerness":
            target = centerness_target(gt_distances(batch, bag.point_index, bag.gt_index).clamp(min=0))
        else:
            target = bag.iou  # the op gives it without a gradient
        logits = batch.objectness[bag.image_index, bag.point_index]
        num_pairs = reduce_mean(logits.new_full((), float(len(logits)))).clamp(min=1.0)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / num_pairs

    def _pressure_factor(self, cls: Tensor, num_gts: Tensor) -> Tensor:
        """(S_ref / S) ** power, S the batch's (point, class) scores per GT (both averaged over ranks)."""
        scores = reduce_mean(cls.new_full((), float(cls.numel())))
        return (self.neg_reference_scores * num_gts / scores) ** self.neg_reference_power

    def _bag_neg_weights(self, batch: Batch, a: Assignment) -> tuple[Tensor, Tensor, float]:
        """The entries of the negative term with their own weight, that weight, and the exponent of
        s there (``neg_weighting``, table 5); every other score weighs ``neg_base_weight s^gamma2``."""
        index, value, gamma_in = a.neg_index, a.w_neg, self.gamma2
        if self.neg_weighting == "pneg":
            gamma_in = 0.0
        elif self.neg_weighting == "ineg":
            index, value = index[:0], value[:0]
        elif self.neg_weighting == "one_minus_wpos":
            entries = dw_ops.pair_entry_index(a.bag, batch.labels, batch.num_points, self.num_classes)
            index, value = dw_ops.merge_entries(entries, (1 - a.w_pos).clamp(min=0))
            gamma_in = 0.0
        elif self.neg_weighting == "none":
            value = torch.zeros_like(value)
        return index, value, gamma_in

    @torch.no_grad()
    def classification_weights(self, batch: Batch, a: Assignment) -> ClassWeights:
        """Table 1's weights of ``loss_cls_pos`` and ``loss_cls_neg`` (unnormalised, before
        ``pos_reweight`` and ``neg_scale``): w_pos per bag pair; ``neg_base_weight s^gamma2`` outside
        the bags and the weighting of ``neg_weighting`` in them (FCOS's during the warm-up)."""
        if self.warming_up:
            return self.warmup_loss.classification_weights(batch, a)
        score = joint_score(batch).contiguous()  # flat entries index the (N, P, C) layout
        index, value, gamma_in = self._bag_neg_weights(batch, a)
        w_neg = self.neg_base_weight * score.pow(self.gamma2)
        w_neg.view(-1)[index] = value * score.view(-1)[index].pow(gamma_in)
        return ClassWeights(score, a.w_pos, w_neg)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
