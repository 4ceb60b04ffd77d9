"""Drawing detections on images, with class names."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import ImageColor, ImageDraw, ImageFont
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

__all__ = ["caption_size", "draw_detections"]

# Distinct, saturated colours (tab10); class k gets PALETTE[k % 10].
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def caption_size(height: int, width: int) -> int:
    """Font size of the captions in pixels: 1/40 of the longer side, at least 12 (still readable on
    a 192-pixel image, not shouting on a 1333-pixel one)."""
    return max(12, round(max(height, width) / 40))


def draw_detections(image_uint8: torch.Tensor, detections: dict[str, torch.Tensor], class_names: Sequence[str],
                    score_thr: float = 0.3) -> torch.Tensor:
    """``image_uint8`` (3, H, W) with the boxes of ``detections`` (``{"boxes" xyxy, "labels",
    "scores"}`` in that image's pixels) scoring at least ``score_thr`` drawn and captioned
    "name score", one colour per class: the caption in black or white on a box of the class's
    colour, above the box (inside it at the top of the image), its size scaled to the image.
    Returns a new (3, H, W) uint8 tensor."""
    if image_uint8.dtype != torch.uint8 or image_uint8.dim() != 3 or image_uint8.shape[0] != 3:
        raise ValueError(f"image_uint8 must be a (3, H, W) uint8 tensor, got {tuple(image_uint8.shape)} "
                         f"{image_uint8.dtype}")
    keep = detections["scores"].detach().cpu() >= score_thr
    boxes = detections["boxes"].detach().float().cpu()[keep].tolist()
    labels = detections["labels"].detach().cpu()[keep].tolist()
    scores = detections["scores"].detach().float().cpu()[keep].tolist()
    bad = [label for label in labels if not 0 <= label < len(class_names)]
    if bad:
        raise ValueError(f"detection label {bad[0]} has no name: {len(class_names)} class names given")
    image = to_pil_image(image_uint8.cpu())
    draw = ImageDraw.Draw(image)
    size = caption_size(image.height, image.width)
    font = ImageFont.load_default(size=size)
    line = max(2, round(size / 8))
    # lowest score first, so that the best boxes and captions end up on top
    for box, label, score in sorted(zip(boxes, labels, scores), key=lambda d: d[2]):
        colour = PALETTE[label % len(PALETTE)]
        draw.rectangle(box, outline=colour, width=line)
        _caption(draw, f"{class_names[label]} {score:.2f}", box, colour, font, image.width)
    return pil_to_tensor(image)


def _caption(draw: ImageDraw.ImageDraw, text: str, box: list[float], colour: str, font: ImageFont.FreeTypeFont,
             image_width: int) -> None:
    ascent, descent = font.getmetrics()  # the font's line, the same for every caption
    pad = max(1, (ascent + descent) // 8)
    width, height = round(draw.textlength(text, font=font)) + 2 * pad, ascent + descent + 2 * pad
    x = min(max(box[0], 0), max(image_width - width, 0))
    y = box[1] - height if box[1] >= height else max(box[1], 0)
    draw.rectangle((x, y, x + width, y + height), fill=colour)
    red, green, blue = ImageColor.getrgb(colour)[:3]
    ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "white"
    draw.text((x + pad, y + pad), text, fill=ink, font=font)
