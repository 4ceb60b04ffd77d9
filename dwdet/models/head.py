"""The FCOS head of the released DW model, with optional box refinement ("+box refine")."""
import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dw_ops
from dwdet.models.points import level_points

DEFAULT_STRIDES = (8, 16, 32, 64, 128)


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(32, channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def boundary_sample_grid(boxes: Tensor, offsets: Tensor) -> Tensor:
    """``dw_ops.boundary_sample`` (forward only) in standard PyTorch ops, for ONNX export: runtimes
    have no kernel for our custom op, but all have ``GridSample``.

    Each of the four channels is its own image sampled at its own points; with
    ``align_corners=False`` cell ``x`` sits at ``(2x + 1) / W - 1``, and zero padding makes the
    corners off the map contribute 0, as in the deformable-convolution semantics of
    ``boundary_sample``."""
    n, c, height, width = boxes.shape
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype).view(height, 1) + offsets[:, 0::2]
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype).view(1, width) + offsets[:, 1::2]
    grid = torch.stack(((2 * xs + 1) / width - 1, (2 * ys + 1) / height - 1), dim=-1)  # (N, C, H, W, 2)
    sampled = F.grid_sample(boxes.reshape(n * c, 1, height, width), grid.reshape(n * c, height, width, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(n, c, height, width)


def refine_distances(distances: Tensor, offsets: Tensor, stride: int, sample=dw_ops.boundary_sample) -> Tensor:
    """DW's box refinement of one level.

    The predicted box ``(x - l, y - t, x + r, y + b)`` is decoded as a 4-channel map; each side is
    re-read by bilinear sampling near that side of the box (``dw_ops.boundary_sample``), at the
    learnt offsets (in cells) plus the side's own distance, and the refined distances are measured
    from the point again.

    Args:
        distances: (N, 4, H, W) (l, t, r, b) in pixels.
        offsets: (N, 8, H, W) the (dy, dx) offset pairs o0..o7 of x1, y1, x2, y2, in cells.
        stride: the level's stride in pixels.
        sample: ``dw_ops.boundary_sample``, or :func:`boundary_sample_grid` for ONNX export.

    Returns:
        (N, 4, H, W) refined, non-negative (l, t, r, b) in pixels.
    """
    _, _, height, width = distances.shape
    x, y = level_points(height, width, stride, distances.device, distances.dtype).t().reshape(2, 1, height, width)
    left, top, right, bottom = distances.unbind(1)
    boxes = torch.stack((x - left, y - top, x + right, y + bottom), dim=1)
    o = offsets.to(distances.dtype).unbind(1)
    # each side is sampled from its own edge: x1 moves left by l/s cells, y1 up by t/s, ...
    sample_offsets = torch.stack((o[0], o[1] - left / stride, o[2] - top / stride, o[3],
                                  o[4], o[5] + right / stride, o[6] + bottom / stride, o[7]), dim=1)
    x1, y1, x2, y2 = sample(boxes, sample_offsets).unbind(1)
    return F.relu(torch.stack((x - x1, y - y1, x2 - x, y2 - y), dim=1))


class FCOSHead(nn.Module):
    """Shared FCOS head over the FPN levels.

    Two towers of ``num_convs`` x (3x3 conv, GroupNorm 32, ReLU); classification logits from the
    cls tower; (l, t, r, b) distances and the objectness logit from the reg tower (FCOS and ATSS
    train it towards the centerness target, the other losses as the factor of the joint score
    ``sigmoid(cls) * sigmoid(objectness)``, which inference ranks by). Distances are
    ``relu(scale_level * x) * stride`` in pixels (float32), refined when ``refine`` is set.
    ``portable = True`` refines with :func:`boundary_sample_grid` instead of the custom op, so that
    the head exports to ONNX (inference only: it has no fused backward).
    """

    def __init__(self, num_classes: int, in_channels: int = 256, num_convs: int = 4,
                 strides: Sequence[int] = DEFAULT_STRIDES, prior_prob: float = 0.02, refine: bool = False) -> None:
        super().__init__()
        if in_channels % 32:
            raise ValueError(f"in_channels must be a multiple of 32 (GroupNorm with 32 groups), got {in_channels}")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.cls_tower = _tower(in_channels, num_convs)
        self.reg_tower = _tower(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, 1, 3, padding=1)  # "centerness" in older checkpoints (compat.py)
        self.reg_offsets = nn.Conv2d(in_channels, 8, 3, padding=1) if refine else None
        self.scales = nn.Parameter(torch.ones(len(self.strides)))  # one learnable Scale per level
        self.portable = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.constant_(self.bbox_pred.bias, 4.0)

    @property
    def refine(self) -> bool:
        return self.reg_offsets is not None

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Per-level (N, C, H, W) class logits, (N, 4, H, W) distances and (N, 1, H, W) objectness logits."""
        if len(features) != len(self.strides):
            raise ValueError(f"the head has {len(self.strides)} levels (strides {self.strides}) "
                             f"but got {len(features)} feature maps")
        cls_logits, bbox_preds, objectness = [], [], []
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            cls_feature = self.cls_tower(feature)
            reg_feature = self.reg_tower(feature)
            # out of place: the released in-place ReLU fails autograd in recent PyTorch
            distances = F.relu(self.scales[level] * self.bbox_pred(reg_feature).float()) * stride
            if self.refine:
                sample = boundary_sample_grid if self.portable else dw_ops.boundary_sample
                distances = refine_distances(distances, self.reg_offsets(reg_feature), stride, sample)
            cls_logits.append(self.cls_logits(cls_feature))
            bbox_preds.append(distances)
            objectness.append(self.objectness(reg_feature))
        return cls_logits, bbox_preds, objectness
