"""The layout of the dense predictions: anchor points of the FPN levels and level flattening.

A point of a level with stride ``s`` at cell (i, j) sits at ``((j + 0.5) s, (i + 0.5) s)``;
points are ordered level by level, row-major. Heads, losses and inference all rely on this order.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def level_points(height: int, width: int, stride: int, device: Optional[torch.device] = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """(H * W, 2) anchor points (x, y) in pixels of one level, row-major."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1)


def anchor_points(feature_sizes: Sequence[Tuple[int, int]], strides: Sequence[int],
                  device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """Anchor points of all levels.

    Args:
        feature_sizes: (H, W) of each level's feature map.
        strides: stride of each level, in pixels.

    Returns:
        points (P, 2) as (x, y) in pixels and strides (P,), level by level, row-major.
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(f"got {len(feature_sizes)} feature sizes but {len(strides)} strides (one per level)")
    points = [level_points(h, w, s, device, dtype) for (h, w), s in zip(feature_sizes, strides)]
    point_strides = [torch.full((len(p),), float(s), device=device, dtype=dtype) for p, s in zip(points, strides)]
    return torch.cat(points), torch.cat(point_strides)


def flatten_levels(maps: List[Tensor]) -> Tensor:
    """Concatenate per-level (N, K, H, W) maps into one (N, P, K) tensor in anchor-point order."""
    return torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)
