"""Small calls of every dw_ops operator, forward and backward, for compute-sanitizer (tools/gpu_check.sh):

    PYTHONPATH=. compute-sanitizer --tool memcheck python tests/dw_ops/sanitizer_cases.py

Sizes are small (the sanitizers run the kernels hundreds of times slower) but take the kernels'
paths: a bag longer than a block and an empty one, entries, samples off the map, a NaN offset, and
16-bit logits and boxes. --device cpu runs the same calls on the CPU (a check of this script).
"""
import argparse

import torch

import dw_ops


def run(device: str) -> None:
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(24), torch.arange(30), indexing="ij")
    points = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * 4  # P = 720, stride 4
    strides = torch.full((len(points),), 4.0)
    distances = (torch.rand(2, len(points), 4, generator=g) * 20 + 1).requires_grad_()
    gt_boxes = [torch.tensor([[0.0, 0.0, 120.0, 96.0], [10.0, 10.0, 40.0, 30.0], [50.0, 50.0, 50.1, 50.1]]),
                torch.tensor([[30.0, 20.0, 90.0, 80.0]])]
    cls = torch.randn(2, 5, len(points), generator=g).transpose(1, 2).requires_grad_()
    ctr = torch.randn(2, len(points), generator=g).requires_grad_()
    labels = torch.tensor([0, 3, 1, 4])
    to = lambda t: t.detach().to(device).requires_grad_(t.requires_grad)  # noqa: E731
    points, strides, distances, cls, ctr, labels = map(to, (points, strides, distances, cls, ctr, labels))
    gt_boxes = [b.to(device) for b in gt_boxes]

    bag = dw_ops.candidate_bag_iou(points, strides, distances, gt_boxes)
    score = dw_ops.pair_scores(bag, cls, ctr, labels)
    weights = dw_ops.dual_weights(bag, score, labels, len(points), cls.shape[-1])
    loss = dw_ops.neg_loss(cls, ctr, weights.neg_index, weights.neg_prob) + (weights.pos_weight * bag.giou_loss).sum()
    loss.backward()
    dw_ops.neg_loss(cls.detach().half(), ctr.detach().half(), weights.neg_index, weights.neg_prob)

    for dtype in (torch.float32, torch.float16):
        boxes = torch.randn(2, 4, 9, 11, generator=g).to(device, dtype).requires_grad_()
        offsets = (torch.randn(2, 8, 9, 11, generator=g) * 3).to(device, dtype)
        offsets[0, 3, 2, 2] = float("nan")
        offsets.requires_grad_()
        dw_ops.boundary_sample(boxes, offsets).float().sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"sanitizer cases ran on {device}: loss {float(loss.detach()):.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    run(parser.parse_args().device)
