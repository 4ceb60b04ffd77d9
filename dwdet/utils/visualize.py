"""Drawing detections on images, with class names."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.utils import draw_bounding_boxes

__all__ = ["draw_detections"]

# Distinct, saturated colours (tab10); class k gets PALETTE[k % 10].
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def draw_detections(image_uint8: torch.Tensor, detections: dict[str, torch.Tensor], class_names: Sequence[str],
                    score_thr: float = 0.3) -> torch.Tensor:
    """``image_uint8`` (3, H, W) with the boxes of ``detections`` (``{"boxes" xyxy, "labels",
    "scores"}`` in that image's pixels) scoring at least ``score_thr`` drawn and captioned
    "name score", one colour per class. Returns a new (3, H, W) uint8 tensor."""
    if image_uint8.dtype != torch.uint8 or image_uint8.dim() != 3 or image_uint8.shape[0] != 3:
        raise ValueError(f"image_uint8 must be a (3, H, W) uint8 tensor, got {tuple(image_uint8.shape)} "
                         f"{image_uint8.dtype}")
    keep = detections["scores"].detach().cpu() >= score_thr
    boxes = detections["boxes"].detach().float().cpu()[keep]
    labels = detections["labels"].detach().cpu()[keep].tolist()
    scores = detections["scores"].detach().float().cpu()[keep].tolist()
    bad = [label for label in labels if not 0 <= label < len(class_names)]
    if bad:
        raise ValueError(f"detection label {bad[0]} has no name: {len(class_names)} class names given")
    captions = [f"{class_names[label]} {score:.2f}" for label, score in zip(labels, scores)]
    colors = [PALETTE[label % len(PALETTE)] for label in labels]
    if not len(boxes):
        return image_uint8.clone()
    return draw_bounding_boxes(image_uint8, boxes, labels=captions, colors=colors, width=2)
