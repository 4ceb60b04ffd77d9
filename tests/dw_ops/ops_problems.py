"""Random DW problems and the glue between the fused ops' sparse outputs and the dense references."""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

import dw_ops
from dw_ops import reference

# (rows, cols, stride) of three tiny FPN levels of a 64 x 80 image: P = 80 + 20 + 6 = 106 points.
LEVELS = ((8, 10, 8), (4, 5, 16), (2, 3, 32))
IMAGE_HW = (64, 80)

EMPTY = torch.zeros(0, 4)
# GT sets of the edge cases (None: random GTs), for a 64 x 80 image.
GT_CASES = {
    "random": None,
    "no_gt": [EMPTY, EMPTY],
    "empty_image_next_to_gts": [EMPTY, torch.tensor([[3.0, 5.0, 41.0, 30.0], [20.0, 10.0, 70.0, 60.0]])],
    "whole_image": [torch.tensor([[0.0, 0.0, 80.0, 64.0]]), torch.tensor([[-10.0, -10.0, 90.0, 74.0]])],
    "zero_area": [torch.tensor([[20.0, 20.0, 20.0, 40.0], [10.0, 30.0, 50.0, 30.0], [6.0, 7.0, 45.0, 33.0]])],
    # x1, x2, y1, y2 fall on point coordinates of the stride-8 level: those points are excluded.
    "points_on_edges": [torch.tensor([[12.0, 4.0, 36.0, 28.0]])],
    "duplicates": [torch.tensor([[5.0, 6.0, 50.0, 40.0], [5.0, 6.0, 50.0, 40.0], [20.0, 10.0, 70.0, 60.0]])],
}


class Problem(NamedTuple):
    points: Tensor  # (P, 2)
    strides: Tensor  # (P,)
    distances: Tensor  # (N, P, 4)
    cls_logits: Tensor  # (N, P, C)
    ctr_logits: Tensor  # (N, P)
    gt_boxes: List[Tensor]  # (G_i, 4) per image
    gt_labels: List[Tensor]  # (G_i,) per image

    @property
    def labels(self) -> Tensor:
        return torch.cat(self.gt_labels) if self.gt_labels else torch.zeros(0, dtype=torch.long)  # N = 0 images

    @property
    def num_classes(self) -> int:
        return self.cls_logits.shape[-1]

    def to(self, device) -> "Problem":
        return Problem(*(x.to(device) if isinstance(x, Tensor) else [t.to(device) for t in x] for x in self))


def make_points(levels=LEVELS, dtype=torch.float64) -> Tuple[Tensor, Tensor]:
    """Points at ((j + 0.5) s, (i + 0.5) s), level by level, row-major, and their strides."""
    points, strides = [], []
    for rows, cols, stride in levels:
        ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        points.append((torch.stack([xs, ys], dim=-1).reshape(-1, 2).to(dtype) + 0.5) * stride)
        strides.append(torch.full((rows * cols,), float(stride), dtype=dtype))
    return torch.cat(points), torch.cat(strides)


def random_boxes(num: int, gen: torch.Generator, dtype=torch.float64, image_hw=IMAGE_HW,
                 min_size: float = 6.0) -> Tensor:
    """Boxes of at least min_size pixels a side inside an image of image_hw = (H, W) pixels."""
    limit = torch.tensor(image_hw[::-1], dtype=dtype)  # (W, H)
    wh = min_size + torch.rand(num, 2, generator=gen, dtype=dtype) * (0.8 * limit - min_size)
    xy = torch.rand(num, 2, generator=gen, dtype=dtype) * (limit - wh)
    return torch.cat([xy, xy + wh], dim=1)


def plausible_distances(points: Tensor, boxes: Tensor, gen: torch.Generator) -> Tensor:
    """(P, 4) distances that roughly predict a random GT per point, so that IoUs span [0, 1)."""
    num_points = len(points)
    if len(boxes) == 0:
        return 1 + 30 * torch.rand(num_points, 4, generator=gen, dtype=points.dtype)
    box = boxes[torch.randint(len(boxes), (num_points,), generator=gen)]
    x, y = points.unbind(-1)
    exact = torch.stack([x - box[:, 0], y - box[:, 1], box[:, 2] - x, box[:, 3] - y], dim=-1).abs()
    jitter = 0.6 + 0.8 * torch.rand(num_points, 4, generator=gen, dtype=points.dtype)
    return (exact * jitter).clamp(min=0.5)


def random_problem(seed: int, num_gts: Sequence[int] = (6, 3), num_classes: int = 4, dtype=torch.float64,
                   levels=LEVELS, image_hw=IMAGE_HW, gt_boxes: Optional[List[Tensor]] = None,
                   gt_labels: Optional[List[Tensor]] = None) -> Problem:
    """A batch with random GTs (or the given ones), plausible distances and random logits."""
    gen = torch.Generator().manual_seed(seed)
    points, strides = make_points(levels, dtype)
    if gt_boxes is None:
        gt_boxes = [random_boxes(g, gen, dtype, image_hw) for g in num_gts]
    gt_boxes = [b.to(dtype) for b in gt_boxes]
    if gt_labels is None:
        gt_labels = [torch.randint(num_classes, (len(b),), generator=gen) for b in gt_boxes]
    num_images, num_points = len(gt_boxes), len(points)
    distances = torch.stack([plausible_distances(points, b, gen) for b in gt_boxes])
    cls_logits = torch.randn(num_images, num_points, num_classes, generator=gen, dtype=dtype) - 1
    ctr_logits = torch.randn(num_images, num_points, generator=gen, dtype=dtype)
    return Problem(points, strides, distances, cls_logits, ctr_logits, gt_boxes, gt_labels)


def at_pairs(ref_bags: Sequence[reference.DenseBag], dense: Sequence[Tensor]) -> Tensor:
    """Dense per-image (P, G) values at the bag pairs, in the fused ops' order (GT by GT, points
    ascending), so that they line up with the per-pair outputs of :mod:`dw_ops`."""
    return torch.cat([d.t()[bag.inside.t()] for bag, d in zip(ref_bags, dense)])


class FusedAssignment(NamedTuple):
    bag: dw_ops.BagPairs
    weights: dw_ops.DualWeights
    neg_loss: Tensor


def fused_assignment(pb: Problem, *, sigma: float = 1.11, hard_prior: bool = False, gamma: float = 2.0,
                     **weight_kwargs) -> FusedAssignment:
    """The fused pipeline candidate_bag_iou -> pair_scores -> dual_weights -> neg_loss."""
    bag = dw_ops.candidate_bag_iou(pb.points, pb.strides, pb.distances, pb.gt_boxes, sigma=sigma,
                                   hard_prior=hard_prior)
    score = dw_ops.pair_scores(bag, pb.cls_logits, pb.ctr_logits, pb.labels)
    weights = dw_ops.dual_weights(bag, score, pb.labels, len(pb.points), pb.num_classes, **weight_kwargs)
    neg = dw_ops.neg_loss(pb.cls_logits, pb.ctr_logits, weights.neg_index, weights.neg_prob, gamma=gamma)
    return FusedAssignment(bag, weights, neg)


def random_entries(shape: Sequence[int], count: int, gen: torch.Generator,
                   dtype=torch.float64) -> Tuple[Tensor, Tensor]:
    """`count` unique sorted flat entries of an (N, P, C) matrix and a weight in [0, 1] for each."""
    index = torch.randperm(torch.Size(shape).numel(), generator=gen)[:count].sort().values
    return index, torch.rand(count, generator=gen, dtype=dtype)


def dense_entry_weight(shape: Sequence[int], index: Tensor, weight: Tensor, base: float = 1.0) -> Tensor:
    """(N, P, C) weights: `base` everywhere except the listed flat entries (e.g. the dense P_neg)."""
    flat = weight.new_full((torch.Size(shape).numel(),), base)
    return flat.index_put((index,), weight).view(*shape)


def make_logits(seed, shape=(2, 30, 5), dtype=torch.float64, num_entries=40):
    """(N, P, C) class and (N, P) centerness logits, and random entries with weights for neg_loss."""
    gen = torch.Generator().manual_seed(seed)
    cls = 2 * torch.randn(shape, generator=gen, dtype=torch.float64) - 1
    ctr = torch.randn(shape[:2], generator=gen, dtype=torch.float64)
    index, weight = random_entries(shape, num_entries, gen)
    return cls.to(dtype), ctr.to(dtype), index, weight


def make_sampling(seed, shape=(2, 4, 5, 6), dtype=torch.float64, margin=1.5):
    """A box map and offsets whose sample points spread over the map and up to `margin` cells past its
    borders, with fractional parts in [0.1, 0.9]: away from the integer kinks of bilinear sampling."""
    gen = torch.Generator().manual_seed(seed)
    N, _, H, W = shape
    boxes = 40 * torch.rand(shape, generator=gen, dtype=torch.float64)
    offsets = []
    for size, grid in ((H, torch.arange(H).view(H, 1)), (W, torch.arange(W).view(1, W))):
        pos = -margin + (size - 1 + 2 * margin) * torch.rand(N, 4, H, W, generator=gen, dtype=torch.float64)
        pos = pos.floor() + 0.1 + 0.8 * torch.rand(N, 4, H, W, generator=gen, dtype=torch.float64)
        offsets.append(pos - grid)
    offsets = torch.stack(offsets, dim=2).reshape(N, 8, H, W)  # channels (2c, 2c + 1) = (dy, dx)
    return boxes.to(dtype), offsets.to(dtype)
