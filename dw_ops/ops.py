"""The Python face of the fused DW operators.

These operators do the heavy parts of Dual Weighting label assignment:

* :func:`candidate_bag_iou` — finds every (GT, point) pair of the candidate bags and computes the
  center prior, the IoU (no gradient) and the differentiable GIoU loss of each pair;
* :func:`dual_weights` — the positive weight of each pair, normalised per GT, and the sparse
  negative-probability matrix ``P_neg`` with its normaliser;
* :func:`neg_loss` — the negative classification term summed over all ``N x P x C`` scores;
* :func:`boundary_sample` — the bilinear boundary-point sampling of DW's box refinement.

All of them work without ever building ``P x G x 4`` or ``P x C`` temporaries. See
``docs/semantics.md`` for the exact math, which follows the released DW model.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from dw_ops import _registration  # noqa: F401  (fake kernels and autograd)

ops = torch.ops.dw_ops

POS_MODES = {"released": 0, "paper": 1}
NEG_MODES = {"released": 0, "paper": 1}


class BagPairs(NamedTuple):
    """The candidate-bag pairs of a batch, grouped per GT (GT g owns pairs
    ``gt_offsets[g]:gt_offsets[g + 1]``, points ascending).

    GTs are numbered across the batch in image order (image 0's boxes first)."""

    gt_index: Tensor  # (K,) int64, GT of each pair, in [0, M)
    point_index: Tensor  # (K,) int64, point of each pair, in [0, P)
    image_index: Tensor  # (K,) int64, image of each pair
    gt_offsets: Tensor  # (M + 1,) int64
    gt_image: Tensor  # (M,) int64, image of each GT
    prior: Tensor  # (K,) center prior (no gradient)
    iou: Tensor  # (K,) IoU of the predicted box with the GT (no gradient)
    giou_loss: Tensor  # (K,) 1 - GIoU, differentiable w.r.t. the distances


class DualWeights(NamedTuple):
    """Dual weights of a batch (all detached).

    ``P_neg`` is the (N, P, C) matrix of ones except at ``neg_index`` (flat ``(n * P + p) * C + k``
    entries, unique and sorted), where it is ``neg_prob``."""

    pos_weight: Tensor  # (K,) per pair, normalised per GT
    pair_neg_prob: Tensor  # (K,) P_neg of each pair before merging pairs that share an entry
    neg_index: Tensor  # (U,) int64
    neg_prob: Tensor  # (U,)
    neg_normalizer: Tensor  # () sum of (1 - P_neg) over the batch


def _pack_gt_boxes(gt_boxes: Union[Sequence[Tensor], Tensor], num_images: int, like: Tensor):
    if isinstance(gt_boxes, Tensor):
        raise TypeError("gt_boxes must be a list with one (G_i, 4) tensor per image, got a single tensor")
    if len(gt_boxes) != num_images:
        raise ValueError(f"gt_boxes has {len(gt_boxes)} entries but distances has {num_images} images "
                         "(batch sizes must match)")
    for i, boxes in enumerate(gt_boxes):
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"gt_boxes[{i}] must have shape (G, 4) (x1, y1, x2, y2), got {shape}")
        if boxes.device != like.device:
            raise ValueError(f"gt_boxes[{i}] is on {boxes.device} but distances is on {like.device}")
    if not gt_boxes:
        return like.new_zeros((0, 4)), torch.zeros((0,), dtype=torch.int64, device=like.device)
    packed = torch.cat([b.to(like.dtype) for b in gt_boxes])
    # Filled on the device from the host's counts: no copy of counts to the device, and no read-back
    # of their sum (which repeat_interleave would need), so the GPU is never waited for here.
    gt_image = torch.cat([torch.full((len(b),), i, dtype=torch.int64, device=like.device)
                          for i, b in enumerate(gt_boxes)])
    return packed.reshape(-1, 4), gt_image


def candidate_bag_iou(points: Tensor, strides: Tensor, distances: Tensor, gt_boxes: Sequence[Tensor], *,
                      sigma: float = 1.11, hard_prior: bool = False) -> BagPairs:
    """Candidate bags of a batch and the IoU terms of their pairs.

    Args:
        points: (P, 2) anchor point coordinates (x, y) in pixels, shared by all images.
        strides: (P,) stride of each point's FPN level.
        distances: (N, P, 4) predicted (l, t, r, b) distances in pixels.
        gt_boxes: one (G_i, 4) tensor of (x1, y1, x2, y2) boxes per image (G_i may be 0).
        sigma: standard deviation of the Gaussian center prior, in stride units.
        hard_prior: use the hard prior (1 where the soft prior exceeds 0.3, else 0).

    Returns:
        :class:`BagPairs`. A pair (g, p) exists when point p is strictly inside box g; its
        ``giou_loss`` is differentiable w.r.t. ``distances``.
    """
    if not isinstance(distances, Tensor) or distances.dim() != 3 or distances.shape[-1] != 4:
        raise ValueError(f"distances must have shape (N, P, 4), got {_shape(distances)}")
    if distances.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"distances must be float32 or float64 (compute the assignment in float32 under AMP), "
                         f"got {distances.dtype}")
    packed, gt_image = _pack_gt_boxes(gt_boxes, distances.shape[0], distances)
    points = points.to(distances.dtype)
    strides = strides.to(distances.dtype)
    pair_gt, pair_point, gt_offsets = ops.bag_pairs(points, packed)
    prior, iou, giou_loss = ops.bag_iou(points, strides, distances, packed, gt_image, pair_gt, pair_point,
                                        float(sigma), bool(hard_prior))
    return BagPairs(pair_gt, pair_point, gt_image[pair_gt], gt_offsets, gt_image, prior, iou, giou_loss)


def pair_scores(bag: BagPairs, cls_logits: Tensor, ctr_logits: Tensor, labels: Tensor) -> Tensor:
    """Joint confidence ``sigmoid(cls[n, p, c_g]) * sigmoid(ctr[n, p])`` of each pair (differentiable).

    cls_logits (N, P, C), ctr_logits (N, P), labels (M,) 0-based class of each GT."""
    cls = cls_logits[bag.image_index, bag.point_index, labels[bag.gt_index]]
    ctr = ctr_logits[bag.image_index, bag.point_index]
    return cls.sigmoid() * ctr.sigmoid()


def dual_weights(bag: BagPairs, pair_score: Tensor, labels: Tensor, num_points: int, num_classes: int, *,
                 pos_mode: str = "released", beta: float = 5.0, mu: float = 5.0, mu_den: Optional[float] = None,
                 neg_mode: str = "released", gamma1: float = 2.0) -> DualWeights:
    """Positive weights and negative probabilities of the bag pairs (detached).

    Args:
        bag: the pairs from :func:`candidate_bag_iou`.
        pair_score: (K,) joint confidence of each pair (see :func:`pair_scores`).
        labels: (M,) 0-based class of each GT, in the batch order of ``bag``.
        num_points, num_classes: P and C, to index the (N, P, C) score matrix.
        pos_mode: ``"released"``: ``t = s * exp(-beta * (1 - GIoU))``; ``"paper"``: ``t = s * IoU^beta`` (eq. 3).
        mu, mu_den: ``w_pos = exp(mu t) t prior / sum_g exp(mu_den t) t prior``. ``mu_den`` defaults
            to 3 in released mode (what the released model does) and to ``mu`` in paper mode (eq. 4).
        neg_mode: ``"released"``: per-GT min-max normalised ``T(IoU) = (1 - IoU^2) / 0.75``;
            ``"paper"``: ``-k IoU^gamma1 + b`` through (0.5, 1) and (0.95, 0) (eqs. 5-6).

    Where two GTs of the same class share a point, the entry of ``P_neg`` takes the smaller of
    their probabilities (the point is a good detection of at least one of them).
    """
    if pos_mode not in POS_MODES or neg_mode not in NEG_MODES:
        raise ValueError(f"pos_mode and neg_mode must be one of {sorted(POS_MODES)}, got {pos_mode!r}, {neg_mode!r}")
    if labels.dim() != 1 or labels.numel() != bag.gt_image.numel():
        raise ValueError(f"labels must have shape ({bag.gt_image.numel()},), one per GT, got {tuple(labels.shape)}")
    if mu_den is None:
        mu_den = 3.0 if pos_mode == "released" else mu
    pos_weight, pair_neg = ops.dual_weights(pair_score.detach(), bag.iou.detach(), bag.giou_loss.detach(),
                                            bag.prior.detach(), bag.gt_offsets, POS_MODES[pos_mode], float(beta),
                                            float(mu), float(mu_den), NEG_MODES[neg_mode], float(gamma1))
    neg_index, neg_prob = merge_entries(pair_entry_index(bag, labels, num_points, num_classes), pair_neg)
    return DualWeights(pos_weight, pair_neg, neg_index, neg_prob, (1 - neg_prob).sum())


def pair_entry_index(bag: BagPairs, labels: Tensor, num_points: int, num_classes: int) -> Tensor:
    """Flat (N, P, C) index ``(n * P + p) * C + c_g`` of each pair's score entry."""
    return (bag.image_index * num_points + bag.point_index) * num_classes + labels[bag.gt_index].long()


def merge_entries(entry_index: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Unique sorted entries, each taking the minimum of the values of the pairs that share it."""
    unique, inverse = torch.unique(entry_index, sorted=True, return_inverse=True)
    merged = value.new_full(unique.shape, float("inf")).scatter_reduce_(0, inverse, value, "amin")
    return unique, merged


def neg_loss(cls_logits: Tensor, ctr_logits: Tensor, entry_index: Optional[Tensor] = None,
             entry_weight: Optional[Tensor] = None, *, gamma: float = 2.0, gamma_in: Optional[float] = None,
             base_weight: float = 1.0) -> Tensor:
    """Negative classification term, summed (not normalised) over every score of the batch:

        sum_{n,p,k} w[n,p,k] * s^g * BCE(s, 0),   s = sigmoid(cls[n,p,k]) * sigmoid(ctr[n,p]),

    with ``w = base_weight, g = gamma`` everywhere except the listed entries (flat
    ``(n * P + p) * C + k`` indices, unique), where ``w = entry_weight, g = gamma_in`` (default ``gamma``).
    The released DW loss uses ``P_neg`` as the entry weights and ``gamma = 2``.

    Differentiable w.r.t. both logits (entry_weight is a constant); the gradients are computed in
    the same pass as the loss when the logits require grad, and the backward only scales them.
    cls_logits (N, P, C) may be any strided view; the fastest layout is class-major, i.e. the
    transpose of a contiguous (N, C, P) tensor (how per-level head outputs concatenate). Returns a
    float32 scalar (float64 for float64 logits). NaN logits give a NaN loss.
    """
    if entry_index is None:
        entry_index = torch.zeros(0, dtype=torch.int64, device=cls_logits.device)
        entry_weight = cls_logits.new_zeros(0, dtype=torch.float32)
    if entry_weight is None:
        raise ValueError("entry_weight is required when entry_index is given")
    if entry_weight.requires_grad:
        raise ValueError("entry_weight is treated as a constant: pass entry_weight.detach()")
    gamma_in = gamma if gamma_in is None else gamma_in
    compute_grad = torch.is_grad_enabled() and (cls_logits.requires_grad or ctr_logits.requires_grad)
    loss, _, _ = ops.neg_loss(cls_logits, ctr_logits, entry_index, entry_weight, float(gamma), float(gamma_in),
                              float(base_weight), compute_grad)
    return loss


def boundary_sample(boxes: Tensor, offsets: Tensor) -> Tensor:
    """Sample each box channel at its own boundary point (DW's box refinement).

    Args:
        boxes: (N, 4, H, W) box map.
        offsets: (N, 8, H, W); channels (2c, 2c + 1) are the (dy, dx) of channel c's sample point, in
            cells, relative to the cell itself.

    Returns:
        (N, 4, H, W): ``out[n, c, h, w]`` = bilinear sample of ``boxes[n, c]`` at
        ``(h + dy, w + dx)``, zero outside the map exactly as a depthwise 1x1 deformable convolution
        with unit weights (``torchvision.ops.deform_conv2d``). Differentiable w.r.t. both inputs;
        float16/bfloat16 inputs accumulate in float32.
    """
    return ops.boundary_sample(boxes, offsets)


def _shape(x) -> Union[tuple, str]:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


__all__: List[str] = ["BagPairs", "DualWeights", "candidate_bag_iou", "pair_scores", "dual_weights",
                      "pair_entry_index", "merge_entries", "neg_loss", "boundary_sample"]
