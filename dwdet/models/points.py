"""Anchor points of the FPN levels."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor


def level_points(sizes: Sequence[Tuple[int, int]], strides: Sequence[int], device=None,
                 dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    """Points of every level, level by level, row-major: cell (i, j) of a level with stride s sits
    at ((j + 0.5) s, (i + 0.5) s).

    Returns (P, 2) (x, y) points and the (P,) stride of each point."""
    if len(sizes) != len(strides):
        raise ValueError(f"got {len(sizes)} feature sizes for {len(strides)} strides")
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([x.reshape(-1), y.reshape(-1)], dim=1))
        point_strides.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(point_strides)
