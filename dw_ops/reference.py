"""Dense plain-PyTorch references of the dw_ops operators.

These compute Dual Weighting the way the released MMDetection DW head does: every point against
every GT of an image as a dense ``(P, G)`` matrix (through ``(P, G, 4)`` boxes), the negative term
over a dense ``(N, P, C)`` ``P_neg``, and autograd for every gradient. They share no code with the
fused operators, which makes them the parity oracle of the tests and the speed baseline of
``tools/bench_ops.py``. ``docs/semantics.md`` states the math they follow.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

BOX_EPS = 1e-6  # mmdet's clamp of the union and enclosing areas
POS_EPS = 1e-12  # floor of the per-GT normaliser of the positive weights
NEG_EPS = 1e-12  # guard of the released min-max normalisation of P_neg


class DenseBag(NamedTuple):
    """Every point-GT pair of one image; only the ``inside`` pairs form the candidate bags."""

    inside: Tensor  # (P, G) bool, point strictly inside the GT box
    prior: Tensor  # (P, G) center prior, 0 outside the box (no gradient)
    iou: Tensor  # (P, G) IoU of the predicted box with the GT, 0 outside the box (no gradient)
    giou_loss: Tensor  # (P, G) 1 - GIoU of every pair, differentiable w.r.t. the distances


class DenseDualWeights(NamedTuple):
    """Dual weights of a batch (detached)."""

    pos_weight: List[Tensor]  # per image (P, G), normalised per GT, 0 outside the box
    p_neg: Tensor  # (N, P, C) negative probability, 1 away from the bags
    neg_normalizer: Tensor  # () sum of (1 - P_neg) over the batch


class DenseAssignment(NamedTuple):
    bags: List[DenseBag]
    weights: DenseDualWeights
    neg_loss: Tensor  # () sum of P_neg * s^gamma * BCE(s, 0)


def aligned_iou_giou(pred: Tensor, target: Tensor, eps: float = BOX_EPS) -> Tuple[Tensor, Tensor]:
    """IoU and GIoU of aligned (..., 4) xyxy boxes, as mmdet's ``bbox_overlaps(aligned=True)``:
    overlap and enclosing sides clamped at 0, union and enclosing area clamped to >= eps."""
    area_pred = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_target = (target[..., 2] - target[..., 0]) * (target[..., 3] - target[..., 1])
    overlap_wh = (torch.min(pred[..., 2:], target[..., 2:]) - torch.max(pred[..., :2], target[..., :2])).clamp(min=0)
    overlap = overlap_wh[..., 0] * overlap_wh[..., 1]
    eps_t = pred.new_tensor(eps)
    union = torch.max(area_pred + area_target - overlap, eps_t)
    iou = overlap / union
    enclose_wh = (torch.max(pred[..., 2:], target[..., 2:]) - torch.min(pred[..., :2], target[..., :2])).clamp(min=0)
    enclose = torch.max(enclose_wh[..., 0] * enclose_wh[..., 1], eps_t)
    return iou, iou - (enclose - union) / enclose


def bag_iou_dense(points: Tensor, strides: Tensor, distances: Tensor, gt_boxes: Sequence[Tensor],
                  sigma: float = 1.11, hard_prior: bool = False) -> List[DenseBag]:
    """Candidate bags, center prior, IoU and GIoU loss of every point-GT pair, per image.

    Args:
        points: (P, 2) point coordinates (x, y) in pixels.
        strides: (P,) stride of each point's level.
        distances: (N, P, 4) predicted (l, t, r, b) distances in pixels.
        gt_boxes: one (G_i, 4) xyxy tensor per image.
        sigma: standard deviation of the Gaussian center prior, in units of the point's stride.
        hard_prior: replace the prior by 1 where it exceeds 0.3, else 0.
    """
    dtype = distances.dtype
    points, strides = points.to(dtype), strides.to(dtype)
    x, y = points[:, 0, None], points[:, 1, None]  # (P, 1): broadcast against (G,)
    stride = strides[:, None]
    bags = []
    for dist, boxes in zip(distances, gt_boxes):
        boxes = boxes.to(dtype)
        x1, y1, x2, y2 = boxes.unbind(-1)
        inside = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1).amin(dim=-1) > 0
        dx = (x - (x1 + x2) / 2) / stride
        dy = (y - (y1 + y2) / 2) / stride
        prior = torch.exp(-dx ** 2 / (2 * sigma ** 2)) * torch.exp(-dy ** 2 / (2 * sigma ** 2))
        if hard_prior:
            prior = (prior > 0.3).to(dtype)
        pred = torch.stack([x - dist[:, 0:1], y - dist[:, 1:2], x + dist[:, 2:3], y + dist[:, 3:4]], dim=-1)
        pred, target = torch.broadcast_tensors(pred, boxes[None])  # (P, G, 4)
        iou, giou = aligned_iou_giou(pred, target)
        bags.append(DenseBag(inside, torch.where(inside, prior, 0).detach(), torch.where(inside, iou, 0).detach(),
                             1 - giou))
    return bags


def joint_scores(cls_logits: Tensor, ctr_logits: Tensor) -> Tensor:
    """``sigmoid(cls) * sigmoid(ctr)``: the (N, P, C) joint confidence of every point and class."""
    return cls_logits.sigmoid() * ctr_logits.sigmoid()[..., None]


def released_neg_prob(iou: Tensor, inside: Tensor) -> Tensor:
    """Released P_neg of every pair of one image (P, G): ``T(IoU) = (1 - IoU^2) / 0.75`` min-max
    normalised over each GT's bag, and 1 where IoU < 0.5."""
    transfer = (1 - iou ** 2) / 0.75
    t_min = transfer.masked_fill(~inside, float("inf")).amin(dim=0)
    t_max = transfer.masked_fill(~inside, float("-inf")).amax(dim=0).clamp(max=1)
    y = (transfer - t_min + NEG_EPS) / (t_max - t_min + NEG_EPS)
    return torch.where(iou < 0.5, 1, y)


def paper_neg_prob(iou: Tensor, gamma1: float = 2.0) -> Tensor:
    """Paper P_neg (eqs. 5-6): 1 below IoU 0.5, 0 above 0.95, ``-k IoU^gamma1 + b`` in between,
    with k, b such that the curve passes through (0.5, 1) and (0.95, 0)."""
    k = 1 / (0.95 ** gamma1 - 0.5 ** gamma1)
    y = k * (0.95 ** gamma1 - iou ** gamma1)
    return torch.where(iou < 0.5, 1, torch.where(iou > 0.95, 0, y))


@torch.no_grad()
def dual_weights_dense(bags: Sequence[DenseBag], cls_logits: Tensor, ctr_logits: Tensor,
                       gt_labels: Sequence[Tensor], *, pos_mode: str = "released", beta: float = 5.0,
                       mu: float = 5.0, mu_den: Optional[float] = None, neg_mode: str = "released",
                       gamma1: float = 2.0) -> DenseDualWeights:
    """Dense positive weights and negative probabilities of a batch (detached).

    Args:
        bags: per image, from :func:`bag_iou_dense`.
        cls_logits: (N, P, C) classification logits; ctr_logits: (N, P) centerness logits.
        gt_labels: per image, the (G_i,) 0-based class of each GT.
        pos_mode: ``"released"``: ``t = s exp(-beta (1 - GIoU))``; ``"paper"``: ``t = s IoU^beta``.
        mu, mu_den: ``w_pos = exp(mu t) t prior / max(sum_p exp(mu_den t) t prior, 1e-12)``;
            ``mu_den`` defaults to 3 in released mode and to ``mu`` in paper mode.
        neg_mode: ``"released"`` (:func:`released_neg_prob`) or ``"paper"`` (:func:`paper_neg_prob`).

    Where several GTs of one class contain a point, its ``P_neg`` entry is the minimum of theirs.
    """
    if mu_den is None:
        mu_den = 3.0 if pos_mode == "released" else mu
    scores = joint_scores(cls_logits, ctr_logits)
    num_classes = scores.shape[-1]
    p_neg = torch.ones(scores.shape, dtype=scores.dtype, device=scores.device)  # contiguous, whatever the logits
    pos_weight = []
    for n, (bag, labels) in enumerate(zip(bags, gt_labels)):
        labels = labels.long()
        pair_score = scores[n][:, labels]  # (P, G)
        if pos_mode == "released":
            t = pair_score * torch.exp(-beta * bag.giou_loss)
        else:
            t = pair_score * bag.iou ** beta
        norm = (torch.exp(mu_den * t) * t * bag.prior).sum(dim=0).clamp(min=POS_EPS)
        pos_weight.append(torch.exp(mu * t) * t * bag.prior / norm)
        neg = released_neg_prob(bag.iou, bag.inside) if neg_mode == "released" else paper_neg_prob(bag.iou, gamma1)
        point, gt = bag.inside.nonzero(as_tuple=True)
        p_neg[n].view(-1).scatter_reduce_(0, point * num_classes + labels[gt], neg[point, gt], "amin",
                                          include_self=False)
    return DenseDualWeights(pos_weight, p_neg, (1 - p_neg).sum())


def neg_loss_dense(cls_logits: Tensor, ctr_logits: Tensor, p_neg: Tensor, gamma: Union[float, Tensor] = 2.0) -> Tensor:
    """``sum P_neg * s^gamma * BCE(s, 0)`` over all (N, P, C) scores, ``s`` the joint confidence.

    ``gamma`` is a float or an (N, P, C) tensor of per-entry exponents. Differentiable w.r.t. both
    logits; computed in the logits' dtype."""
    s = joint_scores(cls_logits, ctr_logits)
    bce = F.binary_cross_entropy(s, torch.zeros_like(s), reduction="none")
    return (p_neg * s.pow(gamma) * bce).sum()


def assign_and_neg_loss_dense(points: Tensor, strides: Tensor, distances: Tensor, cls_logits: Tensor,
                              ctr_logits: Tensor, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], *,
                              sigma: float = 1.11, hard_prior: bool = False, gamma: float = 2.0,
                              **weight_kwargs) -> DenseAssignment:
    """Bag IoU, dual weights and the negative term of a batch, all dense: what the fused pipeline
    ``candidate_bag_iou -> pair_scores -> dual_weights -> neg_loss`` computes.

    ``weight_kwargs`` go to :func:`dual_weights_dense` (pos_mode, beta, mu, mu_den, neg_mode, gamma1)."""
    bags = bag_iou_dense(points, strides, distances, gt_boxes, sigma, hard_prior)
    weights = dual_weights_dense(bags, cls_logits, ctr_logits, gt_labels, **weight_kwargs)
    return DenseAssignment(bags, weights, neg_loss_dense(cls_logits, ctr_logits, weights.p_neg, gamma))


def boundary_sample_dense(boxes: Tensor, offsets: Tensor) -> Tensor:
    """Each channel c of the (N, 4, H, W) box map bilinearly sampled at ``(h + dy, w + dx)``, with
    (dy, dx) = offsets[:, 2c], offsets[:, 2c + 1] in cells, with deformable-convolution semantics:
    a sample with y <= -1, y >= H, x <= -1 or x >= W is 0, corners off the map contribute 0.

    Gathers the four corners explicitly; differentiable w.r.t. both inputs."""
    N, C, H, W = boxes.shape
    offsets = offsets.view(N, C, 2, H, W)
    ys = torch.arange(H, dtype=boxes.dtype, device=boxes.device).view(H, 1) + offsets[:, :, 0]
    xs = torch.arange(W, dtype=boxes.dtype, device=boxes.device).view(1, W) + offsets[:, :, 1]
    valid = (ys > -1) & (ys < H) & (xs > -1) & (xs < W)
    # Rejected samples are moved to 0 so that their corner indices stay finite (their weight is 0).
    ys, xs = torch.where(valid, ys, 0), torch.where(valid, xs, 0)
    y0, x0 = ys.floor(), xs.floor()
    ly, lx = ys - y0, xs - x0
    planes = boxes.reshape(N, C, H * W)
    out = torch.zeros_like(ys)
    for corner_y, weight_y in ((y0, 1 - ly), (y0 + 1, ly)):
        for corner_x, weight_x in ((x0, 1 - lx), (x0 + 1, lx)):
            on_map = valid & (corner_y >= 0) & (corner_y < H) & (corner_x >= 0) & (corner_x < W)
            index = (corner_y.clamp(0, H - 1) * W + corner_x.clamp(0, W - 1)).long()
            value = planes.gather(2, index.view(N, C, H * W)).view(N, C, H, W)
            out = out + torch.where(on_map, weight_y * weight_x * value, 0)
    return out


def boundary_sample_deform_conv(boxes: Tensor, offsets: Tensor) -> Tensor:
    """The same sampling as a depthwise 1x1 deformable convolution with unit weights and 4 offset
    groups (``torchvision.ops.deform_conv2d``)."""
    weight = boxes.new_ones(boxes.shape[1], 1, 1, 1)
    return torchvision.ops.deform_conv2d(boxes, offsets, weight)


def dw_loss_dense(cls_logits: Sequence[Tensor], bbox_preds: Sequence[Tensor], centerness: Sequence[Tensor],
                  targets: Sequence[dict], strides: Sequence[int], sigma: float = 1.11) -> dict:
    """The released DW loss of a batch, written the dense way the released head computes it (single
    process): the speed and memory baseline of ``dwdet.losses.DWLoss`` in tools/bench_ops.py.

    Takes the per-level (N, C, H, W) / (N, 4, H, W) / (N, 1, H, W) head outputs and the
    ``{"boxes", "labels"}`` targets, like DWLoss, and returns the same three terms."""
    num_images, num_classes = cls_logits[0].shape[:2]
    points, point_strides = [], []
    for x, s in zip(cls_logits, strides):
        h, w = x.shape[-2:]
        ys, xs = torch.meshgrid((torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) * s,
                                (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) * s, indexing="ij")
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1))
        point_strides.append(torch.full((h * w,), float(s), dtype=x.dtype, device=x.device))
    points, point_strides = torch.cat(points), torch.cat(point_strides)
    cls = torch.cat([x.permute(0, 2, 3, 1).reshape(num_images, -1, num_classes) for x in cls_logits], 1)
    ctr = torch.cat([x.permute(0, 2, 3, 1).reshape(num_images, -1) for x in centerness], 1)
    reg = torch.cat([x.permute(0, 2, 3, 1).reshape(num_images, -1, 4) for x in bbox_preds], 1)
    boxes = [t["boxes"].to(reg) for t in targets]
    labels = [t["labels"] for t in targets]
    out = assign_and_neg_loss_dense(points, point_strides, reg, cls, ctr, boxes, labels, sigma=sigma)
    scores = joint_scores(cls, ctr)
    pos_cls = pos_loc = cls.new_zeros(())
    for n, (bag, w, lab) in enumerate(zip(out.bags, out.weights.pos_weight, labels)):
        p_cls = scores[n][:, lab.long()]
        ones = torch.ones_like(p_cls)
        pos_cls = pos_cls + (w * F.binary_cross_entropy(p_cls, ones, reduction="none")).sum()
        pos_loc = pos_loc + (w * F.binary_cross_entropy(torch.exp(-5 * bag.giou_loss), ones, reduction="none")).sum()
    num_gts = max(float(sum(len(b) for b in boxes)), 1.0)
    return {"loss_cls_pos": 0.25 * pos_cls / num_gts, "loss_loc": 0.25 * pos_loc / num_gts,
            "loss_cls_neg": out.neg_loss / out.weights.neg_normalizer.clamp(min=1)}
