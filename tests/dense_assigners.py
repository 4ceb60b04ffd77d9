"""Independent dense implementations of the ATSS, GFL, VFL and TOOD losses, written from
docs/semantics.md the way MMDetection's heads compute them: every point against every GT of its
image ((P, G) matrices), one GT at a time, and dense (P, C) classification targets. Slow, simple,
and the oracle of tests/dwdet/losses/test_assigners.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from tests.dense_dw import _aligned_iou_giou, _points


def _flat(cls_logits, bbox_preds, centerness):
    n, c = cls_logits[0].shape[:2]
    cls = torch.cat([x.permute(0, 2, 3, 1).reshape(n, -1, c) for x in cls_logits], 1)
    ctr = torch.cat([x.permute(0, 2, 3, 1).reshape(n, -1) for x in centerness], 1)
    reg = torch.cat([x.permute(0, 2, 3, 1).reshape(n, -1, 4) for x in bbox_preds], 1)
    return cls, ctr, reg


def _inside(points, boxes):
    """(P, G): point strictly inside the box."""
    x, y = points[:, 0, None], points[:, 1, None]
    return (x > boxes[:, 0]) & (y > boxes[:, 1]) & (x < boxes[:, 2]) & (y < boxes[:, 3])


def _centerness(points, boxes):
    l, t = points[:, 0] - boxes[:, 0], points[:, 1] - boxes[:, 1]
    r, b = boxes[:, 2] - points[:, 0], boxes[:, 3] - points[:, 1]
    return torch.sqrt(torch.minimum(l, r) / torch.maximum(l, r) * torch.minimum(t, b) / torch.maximum(t, b))


def dense_atss_assign(points, strides, level, boxes, topk=9, anchor_scale=8.0):
    """(P,) index of the GT each point is assigned to, -1 for negatives (one image)."""
    assigned = torch.full((len(points),), -1, dtype=torch.int64)
    if len(boxes) == 0:
        return assigned
    half = anchor_scale / 2 * strides[:, None]
    priors = torch.cat([points - half, points + half], 1)
    iou = box_iou(priors, boxes)  # (P, G)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = ((points[:, None] - center[None]) ** 2).sum(-1).sqrt()  # (P, G)
    inside = _inside(points, boxes)
    best = torch.full((len(points),), -float("inf"), dtype=points.dtype)
    for g in range(len(boxes)):
        candidates = torch.cat([torch.nonzero(level == lv).squeeze(1)[
            torch.argsort(distance[level == lv, g], stable=True)[:topk]] for lv in level.unique()])
        ious = iou[candidates, g]
        positive = (ious >= ious.mean() + ious.std()) & inside[candidates, g]
        take = positive & (ious > best[candidates])  # strictly better: ties keep the lower GT index
        assigned[candidates[take]] = g
        best[candidates[take]] = ious[take]
    return assigned


def dense_task_aligned_assign(score, iou, inside, topk=13, alpha=1.0, beta=6.0):
    """(P,) assigned GT (-1: negative) and (P,) normalised alignment target, from (P, G) joint
    scores of each GT's class, predicted-box IoUs and the inside mask (one image)."""
    num_points, num_gts = iou.shape
    assigned = torch.full((num_points,), -1, dtype=torch.int64)
    target = torch.zeros(num_points, dtype=iou.dtype)
    if num_gts == 0:
        return assigned, target
    t = score.pow(alpha) * iou.pow(beta)
    best = torch.full((num_points,), -float("inf"), dtype=iou.dtype)
    for g in range(num_gts):
        candidates = torch.nonzero(inside[:, g]).squeeze(1)
        candidates = candidates[torch.argsort(-t[candidates, g], stable=True)[:topk]]
        candidates = candidates[t[candidates, g] > 0]
        take = iou[candidates, g] > best[candidates]
        assigned[candidates[take]] = g
        best[candidates[take]] = iou[candidates[take], g]
    for g in range(num_gts):
        mine = assigned == g
        if mine.any():
            target[mine] = t[mine, g] / (t[mine, g].max() + 1e-7) * iou[mine, g].max()
    return assigned, target


def _image_pairs(points, reg_n, boxes, assigned):
    """Positive points, their GT boxes, and the IoU (detached) and GIoU loss of their predictions."""
    pos = torch.nonzero(assigned >= 0).squeeze(1)
    gt = boxes[assigned[pos]]
    xy = points[pos]
    l, t, r, b = reg_n[pos].unbind(1)
    pred = torch.stack([xy[:, 0] - l, xy[:, 1] - t, xy[:, 0] + r, xy[:, 1] + b], 1)
    iou, giou = _aligned_iou_giou(pred, gt)
    return pos, gt, iou.detach(), 1 - giou


def _focal_on_logits(logits, target, alpha, gamma):
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t) ** gamma * ce).sum()


def _level_ids(sizes):
    return torch.cat([torch.full((h * w,), i) for i, (h, w) in enumerate(sizes)])


def dense_loss(method, cls_logits, bbox_preds, centerness, targets, strides, *, topk=None, warmup=False,
               alpha=None, beta=None):
    """The loss dict of ``method`` in {"atss", "gfl", "vfl", "tood"} (single process)."""
    dtype = cls_logits[0].dtype
    sizes = [x.shape[-2:] for x in cls_logits]
    points, point_strides = _points(sizes, strides, dtype)
    level = _level_ids(sizes)
    cls, ctr, reg = _flat(cls_logits, bbox_preds, centerness)
    num_classes = cls.shape[2]
    cls_sum = box_sum = ctr_sum = cls.new_zeros(())
    num_pos, box_norm = 0, cls.new_zeros(())
    for n, target in enumerate(targets):
        boxes, labels = target["boxes"].to(dtype), target["labels"]
        joint = cls[n].sigmoid() * ctr[n].sigmoid()[:, None]  # (P, C)
        y = torch.zeros_like(joint)
        if method == "tood" and not warmup:
            l, t, r, b = reg[n].unbind(1)
            pred = torch.stack([points[:, 0] - l, points[:, 1] - t, points[:, 0] + r, points[:, 1] + b], 1)
            pair_iou, _ = _aligned_iou_giou(pred[:, None].expand(-1, len(boxes), -1),
                                            boxes[None].expand(len(points), -1, -1))
            assigned, t_hat = dense_task_aligned_assign(joint[:, labels].detach(), pair_iou.detach(),
                                                        _inside(points, boxes), topk or 13, alpha or 1.0, beta or 6.0)
        else:
            assigned = dense_atss_assign(points, point_strides, level, boxes, topk or 9)
        pos, gt, iou, giou_loss = _image_pairs(points, reg[n], boxes, assigned)
        pos_label = labels[assigned[pos]]
        num_pos += len(pos)
        if method == "atss":
            one_hot = torch.zeros_like(joint)
            one_hot[pos, pos_label] = 1
            cls_sum = cls_sum + _focal_on_logits(cls[n], one_hot, 0.25, 2.0)
            ctr_t = _centerness(points[pos], gt)
            box_sum = box_sum + 2.0 * (ctr_t * giou_loss).sum()
            box_norm = box_norm + ctr_t.sum()
            ctr_sum = ctr_sum + F.binary_cross_entropy_with_logits(ctr[n, pos], ctr_t, reduction="sum")
        elif method == "gfl":
            y[pos, pos_label] = iou
            cls_sum = cls_sum + (F.binary_cross_entropy(joint, y, reduction="none") * (y - joint).abs() ** 2).sum()
            w = joint[pos].max(dim=1).values.detach()
            box_sum = box_sum + 2.0 * (w * giou_loss).sum()
            box_norm = box_norm + w.sum()
        elif method == "vfl":
            q = iou.clamp(min=1e-6)
            y[pos, pos_label] = q
            weight = torch.where(y > 0, y, 0.75 * joint ** 2)
            cls_sum = cls_sum + (weight * F.binary_cross_entropy(joint, y, reduction="none")).sum()
            box_sum = box_sum + 2.0 * (q * giou_loss).sum()
            box_norm = box_norm + q.sum()
        elif warmup:  # tood's ATSS warm-up: focal loss on the joint score
            one_hot = torch.zeros_like(joint)
            one_hot[pos, pos_label] = 1
            p_t = joint * one_hot + (1 - joint) * (1 - one_hot)
            alpha_t = 0.25 * one_hot + 0.75 * (1 - one_hot)
            bce = F.binary_cross_entropy(joint, one_hot, reduction="none")
            cls_sum = cls_sum + (alpha_t * (1 - p_t) ** 2 * bce).sum()
            ctr_t = _centerness(points[pos], gt)
            box_sum = box_sum + 2.0 * (ctr_t * giou_loss).sum()
            box_norm = box_norm + ctr_t.sum()
        else:  # tood
            y[pos, pos_label] = t_hat[pos]
            cls_sum = cls_sum + (F.binary_cross_entropy(joint, y, reduction="none") * (y - joint).abs() ** 2).sum()
            box_sum = box_sum + 2.0 * (t_hat[pos] * giou_loss).sum()
            box_norm = box_norm + t_hat[pos].sum()
    box_norm = box_norm.clamp(min=1.0)
    if method == "tood" and not warmup:
        return {"loss_cls": cls_sum / box_norm, "loss_box": box_sum / box_norm}
    num_pos = max(num_pos, 1)
    out = {"loss_cls": cls_sum / num_pos, "loss_box": box_sum / box_norm}
    if method == "atss":
        out["loss_ctr"] = ctr_sum / num_pos
    return out
