"""Dual Weighting loss (Li et al., CVPR 2022) on top of the fused dw_ops operators.

The default reproduces the released 41.5-AP model (see docs/semantics.md); ``variant="paper"``
follows equations 3-8 and 11-12 of the paper literally. The ablations of the paper's tables 4
(candidate bag) and 5 (negative weighting) are options.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dw_ops
from dwdet.losses.common import rank_in_group, upcast
from dwdet.models.points import anchor_points, flatten_levels
from dwdet.utils.dist import reduce_mean

CENTER_PRIORS = ("soft", "hard", "threshold", "topk")
NEG_WEIGHTINGS = ("pneg_ineg", "pneg", "ineg", "one_minus_wpos", "none")
VARIANTS = ("released", "paper")


class Assignment(NamedTuple):
    """DW's label assignment of a batch (see :meth:`DWLoss.assign`)."""

    cls: Tensor  # (N, P, C) class logits, class-major view
    ctr: Tensor  # (N, P) centerness logits
    labels: Tensor  # (M,) 0-based class of each GT, in batch order
    bag: dw_ops.BagPairs  # candidate-bag pairs, grouped per GT
    score: Tensor  # (K,) joint score of each pair (differentiable)
    weights: dw_ops.DualWeights  # detached dual weights


class DWLoss(nn.Module):
    """DW loss: ``loss(cls_logits, bbox_preds, centerness, targets)`` -> dict of loss terms.

    Args:
        num_classes: C.
        strides: stride of each FPN level, in the order of the per-level inputs.
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
        focal_alpha: the paper variant's focal loss outside the bag is ``(1 - alpha) s^gamma2 BCE``.
        neg_scale: factor of the negative term (1: the released loss; larger values test how much
            background pressure the detector needs, see docs/benchmarks.md).
        neg_reference_scores: None (default) keeps the released normaliser. A number S_ref makes
            the negative term's strength follow the (point, class) scores per object of the batch,
            S = N * P * C / (number of GTs): it is multiplied by ``(S_ref / S) ** neg_reference_power``,
            so that it keeps the released strength at S = S_ref (COCO: about 2.4e5) and grows on
            data with fewer scores per object (smaller images, fewer classes, more objects).
        neg_reference_power: the exponent of that factor (0.5: the square root, chosen from the
            ``neg_scale`` runs at 530 and 1.4e5 scores per object; 1: a strength per object
            independent of S, which the same runs rule out). See docs/benchmarks.md.

    Normalisers (both variants): the positive terms by the number of GTs in the batch, the
    negative term by sum(1 - P_neg), each averaged over DDP ranks and clamped to >= 1.
    """

    def __init__(self, num_classes: int, strides: Sequence[int] = (8, 16, 32, 64, 128), *,
                 variant: str = "released", beta: float = 5.0, mu: float = 5.0, mu_den: float | None = None,
                 gamma1: float = 2.0, gamma2: float = 2.0, center_prior: str = "soft", sigma: float = 1.11,
                 prior_threshold: float = 1.7, prior_topk: int = 9, neg_weighting: str = "pneg_ineg",
                 pos_reweight: float | None = None, focal_alpha: float = 0.25, neg_scale: float = 1.0,
                 neg_reference_scores: float | None = None, neg_reference_power: float = 0.5):
        super().__init__()
        _check_choice("variant", variant, VARIANTS)
        _check_choice("center_prior", center_prior, CENTER_PRIORS)
        _check_choice("neg_weighting", neg_weighting, NEG_WEIGHTINGS)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not neg_scale > 0:
            raise ValueError(f"neg_scale must be > 0, got {neg_scale}")
        if neg_reference_scores is not None and not neg_reference_scores > 0:
            raise ValueError(f"neg_reference_scores must be > 0 or None, got {neg_reference_scores}")
        if not neg_reference_power >= 0:
            raise ValueError(f"neg_reference_power must be >= 0, got {neg_reference_power}")
        self.num_classes = num_classes
        self.neg_scale = float(neg_scale)
        self.neg_reference_scores = None if neg_reference_scores is None else float(neg_reference_scores)
        self.neg_reference_power = float(neg_reference_power)
        self.strides = tuple(int(s) for s in strides)
        self.variant = variant
        self.beta, self.mu, self.gamma1, self.gamma2 = beta, mu, gamma1, gamma2
        self.mu_den = mu_den if mu_den is not None else (3.0 if variant == "released" else mu)
        self.center_prior, self.sigma = center_prior, sigma
        self.prior_threshold, self.prior_topk = prior_threshold, prior_topk
        self.neg_weighting = neg_weighting
        self.pos_reweight = pos_reweight if pos_reweight is not None else (0.25 if variant == "released" else 1.0)
        # The released model applies s^2 BCE to every score; the paper uses focal loss outside the bag.
        self.neg_base_weight = 1.0 if variant == "released" else 1.0 - focal_alpha

    def forward(self, cls_logits: List[Tensor], bbox_preds: List[Tensor], centerness: List[Tensor],
                targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        cls, ctr, labels, bag, score, weights = self.assign(cls_logits, bbox_preds, centerness, targets)
        w_pos = weights.pos_weight
        ones = torch.ones_like(score)
        pos_cls = (w_pos * F.binary_cross_entropy(score, ones, reduction="none")).sum()
        if self.variant == "released":  # BCE(exp(-beta L), 1) = beta L, as the released code writes it
            pos_loc = (w_pos * F.binary_cross_entropy(torch.exp(-self.beta * bag.giou_loss), ones,
                                                      reduction="none")).sum()
        else:  # eq. 11: beta * sum w_pos GIoU loss
            pos_loc = self.beta * (w_pos * bag.giou_loss).sum()
        neg = self._neg_loss(cls, ctr, bag, weights, labels, cls.shape[1])

        num_gts = reduce_mean(labels.new_tensor(float(labels.numel()), dtype=cls.dtype)).clamp(min=1.0)
        neg_norm = reduce_mean(weights.neg_normalizer.to(cls.dtype)).clamp(min=1.0)
        loss_neg = self.neg_scale * neg / neg_norm
        if self.neg_reference_scores is not None:
            loss_neg = loss_neg * self._pressure_factor(cls, num_gts)
        return {"loss_cls_pos": self.pos_reweight * pos_cls / num_gts,
                "loss_loc": self.pos_reweight * pos_loc / num_gts,
                "loss_cls_neg": loss_neg}

    def _pressure_factor(self, cls: Tensor, num_gts: Tensor) -> Tensor:
        """(S_ref / S) ** power, S the batch's (point, class) scores per GT (both averaged over ranks)."""
        scores = reduce_mean(cls.new_tensor(float(cls.numel())))
        return (self.neg_reference_scores * num_gts / scores) ** self.neg_reference_power

    def assign(self, cls_logits: List[Tensor], bbox_preds: List[Tensor], centerness: List[Tensor],
               targets: List[Dict[str, Tensor]]) -> Assignment:
        """The label assignment of a batch (the arguments of :meth:`forward`): candidate bags,
        joint scores and dual weights, for the loss and for tools that look at them."""
        if not (len(cls_logits) == len(bbox_preds) == len(centerness) == len(self.strides)):
            raise ValueError(f"expected {len(self.strides)} levels of cls_logits, bbox_preds and centerness, got "
                             f"{len(cls_logits)}, {len(bbox_preds)} and {len(centerness)}")
        if len(targets) != cls_logits[0].shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {cls_logits[0].shape[0]} images")
        # Work in float32 even under AMP; (N, C, H, W) levels -> class-major (N, P, C) views (one copy).
        cls = flatten_levels([upcast(x) for x in cls_logits])
        ctr = flatten_levels([upcast(x) for x in centerness])[..., 0]
        dist = flatten_levels([upcast(x) for x in bbox_preds])
        if cls.shape[2] != self.num_classes:
            raise ValueError(f"cls_logits have {cls.shape[2]} classes, DWLoss was built for {self.num_classes}")
        points, strides = anchor_points([tuple(x.shape[-2:]) for x in cls_logits], self.strides,
                                       device=cls.device, dtype=cls.dtype)
        gt_boxes = [t["boxes"].to(cls) for t in targets]
        labels = torch.cat([t["labels"] for t in targets]).to(cls.device, torch.int64)
        _check_labels(labels, self.num_classes)

        bag = dw_ops.candidate_bag_iou(points, strides, dist, gt_boxes, sigma=self.sigma,
                                       hard_prior=self.center_prior == "hard")
        if self.center_prior in ("threshold", "topk"):
            bag = self._select_bag(bag, points, strides, torch.cat(gt_boxes) if gt_boxes else dist.new_zeros(0, 4))
        score = dw_ops.pair_scores(bag, cls, ctr, labels)
        weights = dw_ops.dual_weights(bag, score, labels, cls.shape[1], self.num_classes,
                                      pos_mode=self.variant, beta=self.beta, mu=self.mu, mu_den=self.mu_den,
                                      neg_mode=self.variant, gamma1=self.gamma1)
        return Assignment(cls, ctr, labels, bag, score, weights)

    def _neg_loss(self, cls: Tensor, ctr: Tensor, bag: dw_ops.BagPairs, weights: dw_ops.DualWeights,
                  labels: Tensor, num_points: int) -> Tensor:
        index, value, gamma_in = weights.neg_index, weights.neg_prob, self.gamma2
        if self.neg_weighting == "pneg":
            gamma_in = 0.0
        elif self.neg_weighting == "ineg":
            index, value = index[:0], value[:0]
        elif self.neg_weighting == "one_minus_wpos":
            entries = dw_ops.pair_entry_index(bag, labels, num_points, self.num_classes)
            index, value = dw_ops.merge_entries(entries, (1 - weights.pos_weight).clamp(min=0))
            gamma_in = 0.0
        elif self.neg_weighting == "none":
            value = torch.zeros_like(value)
        return dw_ops.neg_loss(cls, ctr, index, value, gamma=self.gamma2, gamma_in=gamma_in,
                               base_weight=self.neg_base_weight)

    def _select_bag(self, bag: dw_ops.BagPairs, points: Tensor, strides: Tensor, gt_boxes: Tensor) -> dw_ops.BagPairs:
        """Table 4's hard candidate bags: keep the pairs near the GT center, with prior 1."""
        centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        offset = (points[bag.point_index] - centers[bag.gt_index]) / strides[bag.point_index, None]
        distance = offset.norm(dim=1)
        if self.center_prior == "threshold":
            keep = distance < self.prior_threshold
        else:
            level = torch.bucketize(strides[bag.point_index], strides.new_tensor(self.strides))
            keep = rank_in_group(bag.gt_index * len(self.strides) + level, distance) < self.prior_topk
        return _restrict_bag(bag, keep)


def _restrict_bag(bag: dw_ops.BagPairs, keep: Tensor) -> dw_ops.BagPairs:
    """The sub-bag of the kept pairs (still grouped per GT), with prior 1."""
    gt_index = bag.gt_index[keep]
    counts = torch.bincount(gt_index, minlength=bag.gt_image.numel())
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return dw_ops.BagPairs(gt_index, bag.point_index[keep], bag.image_index[keep], offsets, bag.gt_image,
                           torch.ones_like(bag.prior[keep]), bag.iou[keep], bag.giou_loss[keep])


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_labels(labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"target labels must be 0-based class ids in [0, {num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
