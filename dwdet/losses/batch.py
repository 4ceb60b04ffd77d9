"""The training batch as every loss reads it: the head's outputs flattened to one row per anchor
point, the points and strides the head used, and the targets packed across images and checked once."""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

from dwdet.models.points import anchor_points, flatten_levels


class Batch(NamedTuple):
    """A prepared batch (float32 even under AMP; float64 inputs stay float64)."""

    cls: Tensor  # (N, P, C) class logits, a class-major view
    objectness: Tensor  # (N, P) logits of the head's third branch: every method scores sigmoid(cls) * sigmoid(it)
    dist: Tensor  # (N, P, 4) predicted (l, t, r, b) distances in pixels
    points: Tensor  # (P, 2) anchor points (x, y), level by level, row-major
    strides: Tensor  # (P,) the stride of each point's level
    level_shapes: Tuple[Tuple[int, int], ...]  # (H, W) of each FPN level
    level_strides: Tuple[int, ...]  # the stride of each FPN level, as the head has it
    boxes: Tuple[Tensor, ...]  # one (G_i, 4) xyxy tensor per image, in padded-image pixels
    gt_boxes: Tensor  # (M, 4) all GTs of the batch, image by image
    labels: Tensor  # (M,) int64 0-based class of each GT

    @property
    def num_classes(self) -> int:
        return self.cls.shape[2]

    @property
    def num_points(self) -> int:
        return self.cls.shape[1]

    def per_point(self, values: Sequence) -> Tensor:
        """A value, or a row of values, per level, repeated to one per point: (P,) or (P, K). Filled
        on the device from the host's numbers, since a copy from the host would wait for the GPU."""
        rows = [tuple(v) if isinstance(v, Sequence) else (v,) for v in values]
        columns = [torch.cat([self.points.new_full((h * w,), float(row[k])) for row, (h, w) in zip(rows, self.level_shapes)])
                   for k in range(len(rows[0]))]
        return torch.stack(columns, dim=1) if isinstance(values[0], Sequence) else columns[0]


def prepare_batch(cls_logits: List[Tensor], bbox_preds: List[Tensor], objectness: List[Tensor],
                  targets: List[Dict[str, Tensor]], strides: Sequence[int]) -> Batch:
    """The batch of the head's per-level outputs ((N, C, H, W) logits, (N, 4, H, W) distances in
    pixels, (N, 1, H, W) logits), for the levels of ``strides``, and its ``targets``
    (``{"boxes", "labels"}`` per image, in padded-image pixels).

    The targets are checked here, with one host synchronisation for the whole batch."""
    strides = tuple(int(s) for s in strides)
    if not (len(cls_logits) == len(bbox_preds) == len(objectness) == len(strides)):
        raise ValueError(f"expected {len(strides)} levels (strides {strides}) of cls_logits, bbox_preds and "
                         f"objectness, got {len(cls_logits)}, {len(bbox_preds)} and {len(objectness)}")
    check_targets(targets, cls_logits[0].shape[0])
    # (N, C, H, W) levels -> class-major (N, P, C) views (one copy)
    cls = flatten_levels([upcast(x) for x in cls_logits])
    obj = flatten_levels([upcast(x) for x in objectness])[..., 0]
    dist = flatten_levels([upcast(x) for x in bbox_preds])
    shapes = tuple(tuple(x.shape[-2:]) for x in cls_logits)
    points, point_strides = anchor_points(shapes, strides, device=cls.device, dtype=cls.dtype)
    boxes = tuple(t["boxes"].to(cls) for t in targets)
    gt_boxes = torch.cat(boxes).reshape(-1, 4) if boxes else dist.new_zeros(0, 4)
    labels = torch.cat([t["labels"] for t in targets]).to(cls.device)
    _check_values(gt_boxes, labels, cls.shape[2])
    return Batch(cls, obj, dist, points, point_strides, shapes, strides, boxes, gt_boxes, labels)


def check_targets(targets: List[Dict[str, Tensor]], num_images: int) -> None:
    """The form of the targets (no host synchronisation); their values are checked by :func:`prepare_batch`."""
    if len(targets) != num_images:
        raise ValueError(f"got {num_images} images but {len(targets)} targets")
    for i, target in enumerate(targets):
        boxes, labels = target.get("boxes"), target.get("labels")
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] must be a float (G, 4) tensor, got "
                             f"{getattr(boxes, 'shape', boxes)} {getattr(boxes, 'dtype', '')}")
        if not isinstance(labels, Tensor) or labels.shape != boxes.shape[:1] or labels.dtype != torch.int64:
            raise ValueError(f"targets[{i}]['labels'] must be an int64 ({len(boxes)},) tensor, got "
                             f"{getattr(labels, 'shape', labels)} {getattr(labels, 'dtype', '')}")


def _check_values(boxes: Tensor, labels: Tensor, num_classes: int) -> None:
    bad = torch.stack(((boxes[:, 2:] < boxes[:, :2]).any(), ((labels < 0) | (labels >= num_classes)).any()))
    bad_boxes, bad_labels = bad.tolist()  # the one host synchronisation
    if bad_boxes:
        raise ValueError("targets contain boxes with x2 < x1 or y2 < y1 (boxes must be x1, y1, x2, y2)")
    if bad_labels:
        raise ValueError(f"targets contain labels outside [0, {num_classes}) (labels are 0-based class ids)")


def upcast(x: Tensor) -> Tensor:
    """16-bit AMP activations become float32 for the loss; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
