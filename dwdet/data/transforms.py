"""Dataset transforms. Kept to flips: the model owns resizing, normalisation and padding."""
from __future__ import annotations

import torch


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror an image (C, H, W) and its xyxy boxes left to right."""
    width = image.shape[-1]
    boxes = target["boxes"]
    flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return image.flip(-1), {**target, "boxes": flipped}


def vflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror an image (C, H, W) and its xyxy boxes top to bottom."""
    height = image.shape[-2]
    boxes = target["boxes"]
    flipped = torch.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], dim=1)
    return image.flip(-2), {**target, "boxes": flipped}


def transpose(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Swap an image's (C, H, W) rows and columns, and its boxes' x and y (a mirror in the diagonal)."""
    return image.transpose(-1, -2), {**target, "boxes": target["boxes"][:, [1, 0, 3, 2]]}


class RandomFlips:
    """Each of a horizontal flip, a vertical flip and a transpose with its own probability, in that
    order; the three at 0.5 give each of the 8 symmetries of a square (rotations by 90 degrees and
    mirrors) with probability 1/8, for images that have no up (aerial, microscopy). Draws from
    torch's global RNG, one number per flip with a probability above 0 (the training loader seeds it
    per sample, so that flips are reproducible across workers and resumes)."""

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.0, transpose: float = 0.0) -> None:
        for name, p in (("flip", horizontal), ("vflip", vertical), ("transpose", transpose)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"data.{name}: a probability must be in [0, 1], got {p}")
        self.probabilities = (horizontal, vertical, transpose)

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        for p, flip in zip(self.probabilities, (hflip, vflip, transpose)):
            if p > 0 and torch.rand(()) < p:
                image, target = flip(image, target)
        return image, target

    def __repr__(self) -> str:
        horizontal, vertical, transposed = self.probabilities
        return f"{type(self).__name__}(horizontal={horizontal}, vertical={vertical}, transpose={transposed})"
