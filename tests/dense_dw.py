"""An independent dense implementation of the DW loss, written from docs/semantics.md (the released
model) and the paper, the way the released MMDetection head computes it: every point against every
GT of its image ((P, G) tensors) and a dense (P, C) P_neg. Slow, simple, and the oracle of
tests/dwdet/losses/test_dw_loss.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _points(sizes, strides, dtype):
    pts, strs = [], []
    for (h, w), s in zip(sizes, strides):
        for i in range(h):
            for j in range(w):
                pts.append(((j + 0.5) * s, (i + 0.5) * s))
                strs.append(float(s))
    return torch.tensor(pts, dtype=dtype), torch.tensor(strs, dtype=dtype)


def _aligned_iou_giou(pred, gt, eps=1e-6):
    area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_g = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    lt = torch.max(pred[..., :2], gt[..., :2])
    rb = torch.min(pred[..., 2:], gt[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = torch.max(area_p + area_g - overlap, torch.full_like(overlap, eps))
    iou = overlap / union
    enc_wh = (torch.max(pred[..., 2:], gt[..., 2:]) - torch.min(pred[..., :2], gt[..., :2])).clamp(min=0)
    enclose = torch.max(enc_wh[..., 0] * enc_wh[..., 1], torch.full_like(overlap, eps))
    return iou, iou - (enclose - union) / enclose


def paper_neg_prob(iou, gamma1):
    k = 1.0 / (0.95 ** gamma1 - 0.5 ** gamma1)
    b = 1.0 + k * 0.5 ** gamma1
    mid = -k * iou.clamp(min=0).pow(gamma1) + b
    return torch.where(iou < 0.5, torch.ones_like(iou), torch.where(iou > 0.95, torch.zeros_like(iou), mid))


def dense_dw_loss(cls_logits, bbox_preds, centerness, targets, strides, *, variant="released", sigma=1.11,
                  beta=5.0, mu=5.0, gamma1=2.0, gamma2=2.0, focal_alpha=0.25):
    """Returns the same dict as dwdet.losses.DWLoss (single process)."""
    dtype = cls_logits[0].dtype
    num_images, num_classes = cls_logits[0].shape[:2]
    points, point_strides = _points([x.shape[-2:] for x in cls_logits], strides, dtype)
    cls_all = torch.cat([x.permute(0, 2, 3, 1).reshape(num_images, -1, num_classes) for x in cls_logits], 1)
    ctr_all = torch.cat([x.permute(0, 2, 3, 1).reshape(num_images, -1) for x in centerness], 1)
    reg_all = torch.cat([x.permute(0, 2, 3, 1).reshape(num_images, -1, 4) for x in bbox_preds], 1)
    x, y = points[:, 0], points[:, 1]
    mu_den = 3.0 if variant == "released" else mu
    pos_reweight = 0.25 if variant == "released" else 1.0
    base = 1.0 if variant == "released" else 1.0 - focal_alpha

    pos_cls = pos_loc = neg = cls_all.new_zeros(())
    neg_norm = cls_all.new_zeros(())
    num_gts = 0
    for n in range(num_images):
        boxes, labels = targets[n]["boxes"].to(dtype), targets[n]["labels"]
        s = cls_all[n].sigmoid() * ctr_all[n].sigmoid()[:, None]  # (P, C)
        p_neg = torch.ones_like(s)
        bag = torch.zeros_like(s, dtype=torch.bool)  # (point, class) entries of some GT's bag
        num_gts += len(boxes)
        if len(boxes):
            inside = torch.stack([x[:, None] - boxes[:, 0], y[:, None] - boxes[:, 1], boxes[:, 2] - x[:, None],
                                  boxes[:, 3] - y[:, None]], -1).min(-1).values > 0  # (P, G)
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            dx = (x[:, None] - cx) / point_strides[:, None]
            dy = (y[:, None] - cy) / point_strides[:, None]
            prior = torch.exp(-dx ** 2 / (2 * sigma ** 2)) * torch.exp(-dy ** 2 / (2 * sigma ** 2))
            prior = prior * inside
            l, t, r, b = reg_all[n].unbind(-1)
            pred = torch.stack([x - l, y - t, x + r, y + b], -1)[:, None].expand(-1, len(boxes), -1)
            iou, giou = _aligned_iou_giou(pred, boxes[None].expand_as(pred))
            iou = (iou * inside).detach()
            reg = 1 - giou
            p_cls = s[:, labels]  # (P, G)
            with torch.no_grad():
                t_ = p_cls * (torch.exp(-beta * reg) if variant == "released" else iou.pow(beta))
                w = torch.exp(mu * t_) * t_ * prior
                w = w / (torch.exp(mu_den * t_) * t_ * prior).sum(0).clamp(min=1e-12)
                if variant == "released":
                    tr = (1 - iou ** 2) / 0.75
                    t1 = tr.masked_fill(~inside, math.inf).min(0).values
                    t2 = tr.masked_fill(~inside, -math.inf).max(0).values.clamp(max=1)
                    y_neg = (tr - t1 + 1e-12) / (t2 - t1 + 1e-12)
                    y_neg = torch.where(iou < 0.5, torch.ones_like(y_neg), y_neg)
                else:
                    y_neg = paper_neg_prob(iou, gamma1)
                for g in range(len(boxes)):
                    col = p_neg[:, labels[g]]
                    p_neg[:, labels[g]] = torch.where(inside[:, g], torch.minimum(col, y_neg[:, g]), col)
                    bag[:, labels[g]] |= inside[:, g]
            ones = torch.ones_like(p_cls)
            pos_cls = pos_cls + (w * F.binary_cross_entropy(p_cls, ones, reduction="none")).sum()
            if variant == "released":
                pos_loc = pos_loc + (w * F.binary_cross_entropy(torch.exp(-beta * reg), ones, reduction="none")).sum()
            else:
                pos_loc = pos_loc + beta * (w * reg).sum()
        # Outside the bag: base * s^gamma2 BCE; bag entries: P_neg * s^gamma2 BCE.
        weight = torch.where(bag, p_neg, torch.full_like(p_neg, base))
        neg = neg + (weight * s.pow(gamma2) * F.binary_cross_entropy(s, torch.zeros_like(s), reduction="none")).sum()
        neg_norm = neg_norm + (1 - p_neg).sum()
    num_gts = max(float(num_gts), 1.0)
    return {"loss_cls_pos": pos_reweight * pos_cls / num_gts,
            "loss_loc": pos_reweight * pos_loc / num_gts,
            "loss_cls_neg": neg / neg_norm.clamp(min=1)}
