"""What the losses share: the ``Assignment`` every assigner returns, the candidate bags it is drawn
from, the one-GT-per-point rule, the negative term on the joint score through ``dw_ops.neg_loss``,
and table 1's classification weights that tools read."""
from __future__ import annotations

from typing import Dict, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

import dw_ops
from dwdet.losses.batch import Batch
from dwdet.utils.dist import reduce_mean


class Assignment(NamedTuple):
    """What an assigner decides for a batch: the (GT, point) pairs of the candidate bags that the
    positive terms see, how much and towards what, and the score entries whose negative weight it sets."""

    bag: dw_ops.BagPairs  # the candidate bags: every GT with the points strictly inside it
    pairs: Tensor  # (K,) ascending indices into ``bag``: the positives (DW: every bag pair)
    w_pos: Tensor  # (K,) weight of each pair's positive term (1: a hard positive; DW: its positive weight)
    target: Tensor  # (K,) classification target at the pair's GT class (1: a hard label; TOOD: t^)
    neg_index: Tensor  # (U,) flat (n * P + p) * C + c score entries, unique, ascending
    w_neg: Tensor  # (U,) their weight in the negative term (0: a positive; DW: P_neg); every other entry: 1

    def entries(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Image, point and class of each pair."""
        pairs = self.pairs
        return self.bag.image_index[pairs], self.bag.point_index[pairs], labels[self.bag.gt_index[pairs]]


def candidate_bags(batch: Batch, **options) -> dw_ops.BagPairs:
    """The batch's candidate bags (``dw_ops.candidate_bag_iou``; ``options``: its prior)."""
    return dw_ops.candidate_bag_iou(batch.points, batch.strides, batch.dist, list(batch.boxes), **options)


def hard_assignment(batch: Batch, bag: dw_ops.BagPairs, pairs: Tensor, target: Tensor | None = None) -> Assignment:
    """The positives ``pairs`` of ``bag`` (ascending, one per score entry) with weight 1 and soft
    ``target`` (default 1); their entries leave the negative term."""
    image, point, label = bag.image_index[pairs], bag.point_index[pairs], batch.labels[bag.gt_index[pairs]]
    entries, _ = torch.sort((image * batch.num_points + point) * batch.num_classes + label)
    ones = batch.cls.new_ones(pairs.shape)
    return Assignment(bag, pairs, ones, ones if target is None else target, entries, batch.cls.new_zeros(entries.shape))


class PointLoss(nn.Module):
    """A training loss: ``loss(batch) -> dict`` of its terms, read as assign -> terms.

    A loss defines ``assign(batch) -> Assignment`` (one of the ``assign_*`` functions with its
    options), ``terms(batch, assignment) -> dict`` and ``classification_weights(batch, assignment)
    -> ClassWeights``, its classification term in the form of table 1 (for tools)."""

    num_classes: int

    def forward(self, batch: Batch) -> Dict[str, Tensor]:
        if batch.num_classes != self.num_classes:
            raise ValueError(f"{type(self).__name__}: the batch has {batch.num_classes} classes, the loss was built "
                             f"for {self.num_classes}")
        return self.terms(batch, self.assign(batch))

    def assign(self, batch: Batch) -> Assignment:
        raise NotImplementedError

    def terms(self, batch: Batch, a: Assignment) -> Dict[str, Tensor]:
        raise NotImplementedError

    def classification_weights(self, batch: Batch, a: Assignment) -> ClassWeights:
        raise NotImplementedError


class EpochWarmup:
    """A loss whose first ``warmup_epochs`` epochs train another way (TOOD's ATSS warm-up, DW's
    optional FCOS one). The trainer calls :meth:`set_epoch` before each epoch; a loss never told the
    epoch (a trained model, a tool) is past its warm-up."""

    warmup_epochs: int = 0
    epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch about to be trained."""
        self.epoch = epoch

    @property
    def warming_up(self) -> bool:
        return self.epoch is not None and self.epoch < self.warmup_epochs


def check_epochs(name: str, value: int) -> None:
    """A count of epochs: an integer >= 0 (not a bool, which Python counts as one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def pair_lookup(bag: dw_ops.BagPairs, gt_index: Tensor, point_index: Tensor, num_points: int) -> Tensor:
    """Index in ``bag`` of the pairs (gt_index, point_index), which must be bag pairs (the point
    strictly inside the GT). The bag is sorted by GT, then point, so its keys are ascending."""
    keys = bag.gt_index * num_points + bag.point_index
    return torch.searchsorted(keys, gt_index * num_points + point_index)


def one_gt_per_point(entry: Tensor, key: Tensor, gt_index: Tensor) -> Tensor:
    """Mask of the pairs that keep their point: among the pairs of one point (same ``entry``, the
    image and point), the one with the largest ``key``, ties to the lowest GT index (an argmax
    over GTs, as MMDetection's assigners resolve a point claimed by several GTs)."""
    order = torch.argsort(gt_index, stable=True)
    order = order[torch.argsort(-key[order], stable=True)]
    order = order[torch.argsort(entry[order], stable=True)]
    sorted_entry = entry[order]
    first = torch.ones_like(sorted_entry, dtype=torch.bool)
    first[1:] = sorted_entry[1:] != sorted_entry[:-1]
    keep = torch.zeros_like(entry, dtype=torch.bool)
    keep[order[first]] = True
    return keep


def rank_in_group(group: Tensor, key: Tensor) -> Tensor:
    """Rank of each element by ascending key within its group (0 = smallest; ties by position)."""
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    sorted_group = group[order]
    start = torch.searchsorted(sorted_group, sorted_group, side="left")
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - start
    return rank


def num_positives(batch: Batch, a: Assignment) -> Tensor:
    """The number of assigned pairs averaged over DDP ranks, >= 1 (a normaliser)."""
    return reduce_mean(batch.cls.new_full((), float(len(a.pairs)))).clamp(min=1.0)  # filled, not copied: no wait


def focal_classification(batch: Batch, a: Assignment, alpha: float, gamma: float) -> Tensor:
    """The sigmoid focal loss on the class logits, one-hot at the assigned pairs' entries, summed."""
    image, point, label = a.entries(batch.labels)
    one_hot = torch.zeros_like(batch.cls)
    one_hot[image, point, label] = 1.0
    return sigmoid_focal_loss(batch.cls, one_hot, alpha, gamma, reduction="sum")


def joint_score(batch: Batch) -> Tensor:
    """(N, P, C) ``s = sigmoid(cls) * sigmoid(objectness)``, the score inference ranks by."""
    return batch.cls.sigmoid() * batch.objectness.sigmoid()[..., None]


def joint_score_terms(batch: Batch, a: Assignment, *, gamma: float, neg_weight: float) -> tuple[Tensor, Tensor]:
    """The two halves of a classification loss on the joint score ``s``:

    * the negative half, summed over every score of the batch (one fused pass, ``dw_ops.neg_loss``):
      ``neg_weight * s^gamma * BCE(s, 0)``, at the assignment's entries ``w_neg * s^gamma * BCE(s, 0)``;
    * the joint scores of the assigned pairs (differentiable), for the method's positive term."""
    image, point, label = a.entries(batch.labels)
    neg = dw_ops.neg_loss(batch.cls, batch.objectness, a.neg_index, a.w_neg.detach(), gamma=gamma,
                          base_weight=neg_weight)
    score = batch.cls[image, point, label].sigmoid() * batch.objectness[image, point].sigmoid()
    return neg, score


def quality_focal_pos(score: Tensor, target: Tensor, beta: float) -> Tensor:
    """Positive entries of the quality focal loss (GFL): ``BCE(s, y) |y - s|^beta``, summed."""
    return (F.binary_cross_entropy(score, target, reduction="none") * (target - score).abs().pow(beta)).sum()


# ---- table 1 of the DW paper: every classification loss as -w_pos log(s) - w_neg log(1 - s) ----

class ClassWeights(NamedTuple):
    """A loss's classification term written as ``sum -w_pos log(s) - w_neg log(1 - s)``, unnormalised
    (detached; dense over the batch's scores, for tools and tests on small batches)."""

    score: Tensor  # (N, P, C) the score the loss supervises
    w_pos: Tensor  # (K,) at the assignment's pairs (each at its GT's class)
    w_neg: Tensor  # (N, P, C) at every score entry


def soft_weights(score: Tensor, a: Assignment, labels: Tensor, y: Tensor, scale: Tensor, background: Tensor
                 ) -> ClassWeights:
    """Weights of a loss ``scale * BCE(s, y)`` at the assigned pairs (soft target ``y``) and of the
    ``background`` weight elsewhere: ``w_pos = scale y``, ``w_neg = scale (1 - y)`` at the pairs."""
    image, point, label = a.entries(labels)
    w_neg = background.clone()
    w_neg[image, point, label] = scale * (1 - y)
    return ClassWeights(score, scale * y, w_neg)


def focal_weights(score: Tensor, a: Assignment, labels: Tensor, alpha: float, gamma: float) -> ClassWeights:
    """The sigmoid focal loss: ``alpha (1 - s)^gamma`` at the positives, ``(1 - alpha) s^gamma`` elsewhere."""
    image, point, label = a.entries(labels)
    s = score[image, point, label]
    return soft_weights(score, a, labels, torch.ones_like(s), alpha * (1 - s).pow(gamma),
                        (1 - alpha) * score.pow(gamma))
