"""tools/vis_weights.py, tools/assign_stats.py and tools/bench_train.py: the weight maps and the
assignment statistics against quantities recomputed independently, and one timed step of every
benchmarked model."""
import json
import os

import pytest
import torch
from torchvision.ops import box_iou

from dwdet.config import load_config, save_config
from dwdet.engine.builders import build_model
from dwdet.engine.checkpoint import save_checkpoint
from dwdet.losses import LOSSES, DWLoss
from dwdet.models import build_fcos
from tests.dense_assigners import _inside, _level_ids, dense_atss_assign
from tests.dense_dw import _points
from tests.paths import ROOT
from tests.tool_loader import load_tool

vis_weights = load_tool("vis_weights")
bench_train = load_tool("bench_train")

# the comparison's configs (configs/lab/compare_*) at a size that builds in a second
TINY_OPTS = ["data.params.num_train=8", "data.params.num_val=4", "data.params.image_size=64",
             "model.min_size=(64,)", "model.max_size=64"]


def boxes_inside(dist, stride, box):
    """For one level's (4, H, W) distances: the mask of points strictly inside ``box`` and the
    boxes those points predict, decoded here independently of dwdet."""
    height, width = dist.shape[-2:]
    ys, xs = torch.meshgrid((torch.arange(height) + 0.5) * stride, (torch.arange(width) + 0.5) * stride, indexing="ij")
    x1, y1, x2, y2 = box.tolist()
    inside = (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)
    d = dist.permute(1, 2, 0)[inside]
    return inside, torch.stack([xs[inside] - d[:, 0], ys[inside] - d[:, 1], xs[inside] + d[:, 2],
                                ys[inside] + d[:, 3]], 1)


def tiny_model(kind, num_classes=3):
    torch.manual_seed(0)
    loss = LOSSES[kind](num_classes)
    return build_fcos(num_classes, loss, backbone="resnet18", backbone_weights=None, backbone_norm="gn",
                      channels=64, min_size=96, max_size=128)


def head_of(model, image):
    model.eval()
    with torch.no_grad():
        batch, _ = model.transform([image])
        return model.head(list(model.backbone(batch.tensors).values()))


VIS_IMAGE = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))  # resized x2 to 96 x 128
VIS_TARGET = {"boxes": torch.tensor([[4.0, 6.0, 40.0, 30.0], [30.0, 20.0, 60.0, 46.0]]), "labels": torch.tensor([2, 0])}
VIS_BOXES = VIS_TARGET["boxes"] * 2  # in the pixels of the resized input


@pytest.mark.parametrize("kind", ["fcos", "atss", "gfl", "vfl", "tood", "dw"])
def test_weight_maps_give_each_loss_its_own_weights(kind):
    model = tiny_model(kind)
    maps, map_box = vis_weights.weight_maps(model, VIS_IMAGE, VIS_TARGET, gt=0)
    torch.testing.assert_close(map_box, VIS_BOXES[0])
    cls, _, ctr = head_of(model, VIS_IMAGE)
    sizes = [tuple(x.shape[-2:]) for x in cls]
    points, strides = _points(sizes, model.head.strides, torch.float32)
    flat = {name: torch.cat([m[name].flatten() for m in maps]) for name in ("score", "w_pos", "w_neg")}
    cls_prob = torch.cat([x[0, 2].flatten() for x in cls]).sigmoid()
    joint = cls_prob * torch.cat([x[0, 0].flatten() for x in ctr]).sigmoid()
    score = cls_prob if kind in ("fcos", "atss") else joint
    torch.testing.assert_close(flat["score"], score)
    inside = _inside(points, VIS_BOXES)  # (P, 2)
    # positives of box 0 lie inside it; the points inside neither box are negatives of every loss
    assert (flat["w_pos"] > 0).any() and (flat["w_pos"][~inside[:, 0]] == 0).all()
    background = {"fcos": 0.75 * score ** 2, "atss": 0.75 * score ** 2, "gfl": score ** 2, "vfl": 0.75 * score ** 2,
                  "tood": score ** 2, "dw": score ** 2}[kind]
    outside = ~inside.any(dim=1)
    torch.testing.assert_close(flat["w_neg"][outside], background[outside])
    if kind in ("atss", "gfl", "vfl"):  # exactly the dense oracle's ATSS positives of box 0
        owner = dense_atss_assign(points.double(), strides.double(), _level_ids(sizes), VIS_BOXES.double())
        assert torch.equal(flat["w_pos"] > 0, owner == 0)
    if kind == "vfl":  # w_pos = q^2 and w_neg = q (1 - q) at the positives
        q = flat["w_pos"][owner == 0].sqrt()
        torch.testing.assert_close(flat["w_neg"][owner == 0], q * (1 - q))


def test_weight_maps_need_the_loss_and_a_valid_box():
    model = build_fcos(3, None, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=32)
    with pytest.raises(ValueError, match="has no loss"):
        vis_weights.weight_maps(model, VIS_IMAGE, VIS_TARGET, 0)
    with pytest.raises(ValueError, match="--gt 5"):
        vis_weights.weight_maps(tiny_model("atss"), VIS_IMAGE, VIS_TARGET, gt=5)


def test_vis_weights_draws_tiny_checkpoints_side_by_side(tmp_path):
    runs = []
    for kind in ("atss", "tood", "dw"):
        path = "configs/lab/compare_r18_synthetic.py" if kind == "dw" else f"configs/lab/compare_{kind}_r18_synthetic.py"
        cfg = load_config(os.path.join(ROOT, path), [*TINY_OPTS, f"data.root={tmp_path / 'data'}"])
        run = tmp_path / kind
        run.mkdir()
        save_config(cfg, run / "config.json")
        save_checkpoint({"model": build_model(cfg).state_dict()}, run / "last.pth")
        runs.append(str(run))
    out = tmp_path / "weights.png"
    vis_weights.main([*runs, "--index", "0", "--out", str(out)])
    assert out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="not a finished run folder"):
        vis_weights.main([str(tmp_path), "--out", str(out)])


def test_bench_train_times_every_model(tmp_path):
    out = tmp_path / "bench.json"
    bench_train.main(["--height", "64", "--width", "96", "--steps", "1", "--warmup", "0", "--gts", "3",
                      "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["results"]) == set(bench_train.MODELS)
    assert all(r["median_s"] > 0 for r in report["results"].values())
    assert set(report["ratios"]) == {"dw / fcos", "dw_refine / fcos", "fcos / torchvision_fcos"}


def test_assign_stats_against_boxes_decoded_independently():
    assign_stats = load_tool("assign_stats")
    torch.manual_seed(0)
    model = build_fcos(3, None, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=64,
                       min_size=64, max_size=64)
    # the second box lies between the stride-8 points (4, 12, ...) in x: no point strictly inside
    target = {"boxes": torch.tensor([[6.0, 6.0, 58.0, 50.0], [13.0, 30.0, 19.0, 40.0]]), "labels": torch.tensor([1, 2])}
    image = torch.rand(3, 64, 64)
    stats = assign_stats.bag_stats(model, [(image, target)], DWLoss(3))
    assert stats["gts"] == 2 and stats["bag"] == 0.5
    model.eval()
    with torch.no_grad():
        batch, _ = model.transform([image])
        _, dist, _ = model.head(list(model.backbone(batch.tensors).values()))
    # best IoU over the big box's points, decoded here level by level
    best = 0.0
    for level, stride in zip(dist, model.head.strides):
        _, pred = boxes_inside(level[0], stride, target["boxes"][0])
        if len(pred):
            best = max(best, float(box_iou(pred, target["boxes"][:1]).max()))
    assert stats["best IoU"] == pytest.approx(best / 2, rel=1e-4)  # the other GT counts as 0
    # the box ranked first: the bag point with the highest joint score for the GT's class (1)
    with torch.no_grad():
        cls_maps, _, ctr_maps = model.head(list(model.backbone(batch.tensors).values()))
    ranked = []
    for level, cls_level, ctr_level, stride in zip(dist, cls_maps, ctr_maps, model.head.strides):
        inside, pred = boxes_inside(level[0], stride, target["boxes"][0])
        joint = (cls_level[0, 1].sigmoid() * ctr_level[0, 0].sigmoid())[inside]
        ranked += list(zip(joint.tolist(), box_iou(pred, target["boxes"][:1])[:, 0].tolist()))
    assert stats["top IoU"] == pytest.approx(max(ranked)[1] / 2, rel=1e-4) and stats["top IoU"] <= stats["best IoU"]
    assert stats["IoU>=0.5"] == (0.5 if best >= 0.5 else 0.0)
    assert 0 <= stats["P_neg=1"] <= 1 and 0 <= stats["score"] <= 1
    # the score statistics, recomputed level by level from the head's maps
    with torch.no_grad():
        cls, _, ctr = model.head(list(model.backbone(batch.tensors).values()))
    counts, ctr_in, ctr_out = {"right": 0, "wrong": 0, "bg": 0}, [], []
    for cls_level, ctr_level, stride in zip(cls, ctr, model.head.strides):
        height, width = cls_level.shape[-2:]
        for i in range(height):
            for j in range(width):
                x, y = (j + 0.5) * stride, (i + 0.5) * stride
                holding = [g for g, (x0, y0, x1, y1) in enumerate(target["boxes"].tolist()) if x0 < x < x1 and y0 < y < y1]
                c = float(ctr_level[0, 0, i, j].sigmoid())
                (ctr_in if holding else ctr_out).append(c)
                for k in range(3):
                    if float(cls_level[0, k, i, j].sigmoid()) * c > model.score_thresh:
                        key = "right" if any(int(target["labels"][g]) == k for g in holding) else (
                            "wrong" if holding else "bg")
                        counts[key] += 1
    # bag pairs: (point, GT) with the point strictly inside the GT box, on every level; shared if
    # the point is inside both boxes
    bag_pairs = shared = 0
    for stride, level in zip(model.head.strides, cls):
        for i in range(level.shape[-2]):
            for j in range(level.shape[-1]):
                x, y = (j + 0.5) * stride, (i + 0.5) * stride
                holding = sum(x0 < x < x1 and y0 < y < y1 for x0, y0, x1, y1 in target["boxes"].tolist())
                bag_pairs += holding
                shared += holding if holding > 1 else 0
    assert stats["shared"] == pytest.approx(shared / bag_pairs)
    assert stats["ctr in"] == pytest.approx(sum(ctr_in) / len(ctr_in), rel=1e-5)
    assert stats["ctr bg"] == pytest.approx(sum(ctr_out) / len(ctr_out), rel=1e-5)
    assert {k: stats[k] for k in counts} == counts and stats["s>0.05"] == sum(counts.values())


def test_assign_stats_share_of_w_pos_on_the_finest_level():
    assign_stats = load_tool("assign_stats")
    torch.manual_seed(0)
    model = build_fcos(3, None, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=64,
                       min_size=64, max_size=64)
    image = torch.rand(3, 64, 64)
    # stride-8 points lie at 4 + 8k, stride-16 ones at 8 + 16k, stride-32 ones at 16 + 32k: the first
    # box holds the stride-8 point (4, 4) alone, the second the stride-16 point (8, 8) alone
    for box, share in (([2.0, 2.0, 7.0, 7.0], 1.0), ([6.0, 6.0, 10.0, 10.0], 0.0)):
        target = {"boxes": torch.tensor([box]), "labels": torch.tensor([0])}
        stats = assign_stats.bag_stats(model, [(image, target)], DWLoss(3))
        assert stats["bag"] == 1.0 and stats["w_pos s8"] == share and stats["shared"] == 0.0
