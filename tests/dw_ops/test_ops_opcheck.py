"""torch.library.opcheck of every dw_ops operator (schema, fake kernel, autograd registration,
AOT dispatch with dynamic shapes), on float32/float64 problems, empty ones and bfloat16 inputs."""
import pytest
import torch
from torch.library import opcheck

import dw_ops  # noqa: F401  (registers the operators)
from ops_problems import GT_CASES, random_entries, random_problem

ops = torch.ops.dw_ops
LEVELS = ((4, 5, 8), (2, 3, 16))
UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def bag_args(case, dtype):
    pb = random_problem(0, dtype=dtype, levels=LEVELS, gt_boxes=GT_CASES[case])
    boxes = torch.cat(pb.gt_boxes)
    gt_image = torch.repeat_interleave(torch.arange(len(pb.gt_boxes)), torch.tensor([len(b) for b in pb.gt_boxes]))
    pair_gt, pair_point, offsets = (t.clone() for t in ops.bag_pairs(pb.points, boxes))
    return pb, boxes, gt_image, pair_gt, pair_point, offsets


def samples():
    """(op, id, args) for every operator."""
    gen = torch.Generator().manual_seed(0)
    for case, dtype in (("random", torch.float64), ("no_gt", torch.float32)):
        pb, boxes, gt_image, pair_gt, pair_point, offsets = bag_args(case, dtype)
        num_pairs = len(pair_gt)
        sid = f"{case}-{dtype}"
        yield "bag_pairs", sid, (pb.points, boxes)
        yield "bag_iou", sid, (pb.points, pb.strides, pb.distances.requires_grad_(), boxes, gt_image, pair_gt,
                               pair_point, 1.11, case == "random")
        yield "_bag_iou_backward", sid, (torch.rand(num_pairs, dtype=dtype), pb.points, pb.distances.detach(),
                                         boxes, gt_image, pair_gt, pair_point)
        pair_values = [torch.rand(num_pairs, generator=gen, dtype=torch.float64).to(dtype) for _ in range(4)]
        mode = int(case == "random")  # 1: paper modes
        yield "dual_weights", sid, (*pair_values, offsets, mode, 5.0, 5.0, 3.0, mode, 2.0)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        shape = (2, 7, 3)
        cls = torch.randn(shape, generator=gen).to(dtype)
        ctr = torch.randn(shape[:2], generator=gen).to(dtype)
        index, weight = random_entries(shape, 9, gen, torch.float32)
        params = (2.0, 1.5, 0.7)
        sid = str(dtype)
        yield "neg_loss", sid, (cls.requires_grad_(), ctr.requires_grad_(), index, weight, *params, True)
        yield "neg_loss", f"{sid}-no_grad", (cls.detach(), ctr.detach(), index, weight, *params, False)
        boxes = (10 * torch.rand(2, 4, 3, 5, generator=gen)).to(dtype)
        offsets = (3 * torch.randn(2, 8, 3, 5, generator=gen)).to(dtype)
        yield "boundary_sample", sid, (boxes.requires_grad_(), offsets.requires_grad_())
        yield "_boundary_sample_backward", sid, (torch.randn(boxes.shape, generator=gen).to(dtype),
                                                 boxes.detach(), offsets.detach())
    yield "neg_loss", "no_entries", (cls.float(), ctr.float(), torch.zeros(0, dtype=torch.long), torch.zeros(0),
                                     2.0, 2.0, 1.0, True)


def cases():
    for op, sid, args in samples():
        for util in UTILS:
            yield pytest.param(op, args, util, id=f"{op}-{sid}-{util}")


@pytest.mark.parametrize("op, args, util", list(cases()))
def test_opcheck(op, args, util):
    opcheck(getattr(ops, op).default, args, test_utils=util)
