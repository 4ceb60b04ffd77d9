"""The fake kernels reject bad arguments as the C++ kernels do: for every shape, dtype and device
check, the error raised under FakeTensorMode (what torch.compile traces with) carries the message of
the eager CPU op, word for word."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import dw_ops  # noqa: F401  (registers the ops and their fake kernels)

ops = torch.ops.dw_ops
f32, f64, i64 = torch.float32, torch.float64, torch.int64


def bag_args(**change):
    args = dict(points=torch.rand(6, 2), strides=torch.full((6,), 8.0), distances=torch.rand(2, 6, 4),
                gt_boxes=torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]]),
                gt_image=torch.tensor([0, 1]), pair_gt=torch.tensor([0, 1, 1]), pair_point=torch.tensor([0, 2, 5]),
                sigma=0.5, hard_prior=False)
    return {**args, **change}


def weight_args(**change):
    args = dict(score=torch.rand(5), iou=torch.rand(5), giou_loss=torch.rand(5), prior=torch.rand(5),
                gt_pair_offsets=torch.tensor([0, 2, 5]), pos_mode=0, beta=5.0, mu_num=1.0, mu_den=1.0, neg_mode=0,
                gamma1=2.0)
    return {**args, **change}


def neg_args(**change):
    args = dict(cls_logits=torch.randn(2, 6, 3), ctr_logits=torch.randn(2, 6), entry_index=torch.tensor([1, 4, 9]),
                entry_weight=torch.rand(3), gamma_out=2.0, gamma_in=1.5, base_weight=1.0, compute_grad=True)
    return {**args, **change}


def sample_args(**change):
    args = dict(boxes=torch.rand(2, 4, 3, 5), offsets=torch.randn(2, 8, 3, 5))
    return {**args, **change}


def bag_iou_backward_args(**change):
    bag = bag_args()
    args = dict(grad=torch.rand(3), points=bag["points"], distances=bag["distances"], gt_boxes=bag["gt_boxes"],
                gt_image=bag["gt_image"], pair_gt=bag["pair_gt"], pair_point=bag["pair_point"])
    return {**args, **change}


def sample_backward_args(**change):
    return {"grad": torch.rand(2, 4, 3, 5), **sample_args(), **change}


def pairs_args(**change):
    bag = bag_args()
    return {"points": bag["points"], "gt_boxes": bag["gt_boxes"], **change}


CASES = {
    "points (P, 3)": (ops.bag_pairs, pairs_args(points=torch.rand(6, 3))),
    "gt_boxes 1-D": (ops.bag_pairs, pairs_args(gt_boxes=torch.rand(4))),
    "int points": (ops.bag_pairs, pairs_args(points=torch.zeros(6, 2, dtype=torch.int32))),
    "double gt_boxes": (ops.bag_pairs, pairs_args(gt_boxes=torch.rand(2, 4, dtype=f64))),
    "gt_boxes on meta": (ops.bag_pairs, pairs_args(gt_boxes=torch.rand(2, 4, device="meta"))),
    "distances of other P": (ops.bag_iou, bag_args(distances=torch.rand(2, 5, 4))),
    "distances 2-D": (ops.bag_iou, bag_args(distances=torch.rand(6, 4))),
    "distances double": (ops.bag_iou, bag_args(distances=torch.rand(2, 6, 4, dtype=f64))),
    "strides of other P": (ops.bag_iou, bag_args(strides=torch.ones(5))),
    "strides double": (ops.bag_iou, bag_args(strides=torch.ones(6, dtype=f64))),
    "gt_image int32": (ops.bag_iou, bag_args(gt_image=torch.tensor([0, 1], dtype=torch.int32))),
    "gt_image of other M": (ops.bag_iou, bag_args(gt_image=torch.tensor([0, 1, 1]))),
    "pair_gt 2-D": (ops.bag_iou, bag_args(pair_gt=torch.zeros(3, 1, dtype=i64))),
    "pairs of two lengths": (ops.bag_iou, bag_args(pair_point=torch.tensor([0, 2]))),
    "backward grad of other K": (ops._bag_iou_backward, bag_iou_backward_args(grad=torch.rand(4))),
    "backward distances 2-D": (ops._bag_iou_backward, bag_iou_backward_args(distances=torch.rand(6, 4))),
    "score 2-D": (ops.dual_weights, weight_args(score=torch.rand(5, 1))),
    "iou of other K": (ops.dual_weights, weight_args(iou=torch.rand(4))),
    "prior double": (ops.dual_weights, weight_args(prior=torch.rand(5, dtype=f64))),
    "half score": (ops.dual_weights, weight_args(score=torch.rand(5).half())),
    "offsets float": (ops.dual_weights, weight_args(gt_pair_offsets=torch.tensor([0.0, 5.0]))),
    "offsets empty": (ops.dual_weights, weight_args(gt_pair_offsets=torch.zeros(0, dtype=i64))),
    "cls_logits 2-D": (ops.neg_loss, neg_args(cls_logits=torch.randn(6, 3))),
    "ctr_logits of other P": (ops.neg_loss, neg_args(ctr_logits=torch.randn(2, 5))),
    "ctr_logits of other N": (ops.neg_loss, neg_args(ctr_logits=torch.randn(3, 6))),
    "int cls_logits": (ops.neg_loss, neg_args(cls_logits=torch.zeros(2, 6, 3, dtype=torch.int32))),
    "ctr_logits bf16": (ops.neg_loss, neg_args(ctr_logits=torch.randn(2, 6).bfloat16())),
    "entry_weight half": (ops.neg_loss, neg_args(entry_weight=torch.rand(3).half())),
    "entry_weight of other U": (ops.neg_loss, neg_args(entry_weight=torch.rand(4))),
    "entry_index int32": (ops.neg_loss, neg_args(entry_index=torch.tensor([1, 4, 9], dtype=torch.int32))),
    "boxes (N, 3, H, W)": (ops.boundary_sample, sample_args(boxes=torch.rand(2, 3, 3, 5))),
    "offsets (N, 4, H, W)": (ops.boundary_sample, sample_args(offsets=torch.randn(2, 4, 3, 5))),
    "offsets of other W": (ops.boundary_sample, sample_args(offsets=torch.randn(2, 8, 3, 4))),
    "int boxes": (ops.boundary_sample, sample_args(boxes=torch.zeros(2, 4, 3, 5, dtype=torch.int32))),
    "offsets double": (ops.boundary_sample, sample_args(offsets=torch.randn(2, 8, 3, 5, dtype=f64))),
    "offsets on meta": (ops.boundary_sample, sample_args(offsets=torch.randn(2, 8, 3, 5, device="meta"))),
    "backward grad of other shape": (ops._boundary_sample_backward, sample_backward_args(grad=torch.rand(2, 4, 3, 4))),
}


def message(error: BaseException) -> str:
    return str(error).split("\nException raised from")[0].strip()


@pytest.mark.parametrize("case", CASES)
def test_fake_kernel_error_equals_eager_error(case):
    op, args = CASES[case]
    with pytest.raises(RuntimeError) as eager:
        op(**args)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) and v.device.type != "meta" else v
                for k, v in args.items()}
        with pytest.raises(RuntimeError) as compiled:
            op(**fake)
    assert message(compiled.value) == message(eager.value)


def test_fake_kernels_accept_valid_arguments():
    with FakeTensorMode() as mode:
        fake = lambda args: {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
                             for k, v in args.items()}
        prior, iou, giou = ops.bag_iou(**fake(bag_args()))
        assert prior.shape == (3,)
        assert ops.boundary_sample(**fake(sample_args())).shape == (2, 4, 3, 5)
        loss, grad_cls, grad_ctr = ops.neg_loss(**fake(neg_args()))
        assert grad_cls.shape == (2, 6, 3) and grad_ctr.shape == (2, 6)
