"""tools/compare.py, tools/vis_weights.py and tools/bench_train.py: the comparison's bookkeeping and
report, an end-to-end comparison at toy scale, the weight maps against quantities recomputed
independently, and one timed step of every benchmarked model."""
import json
import math
import os

import pytest
import torch
from torchvision.ops import box_iou

from dwdet.config import load_config
from dwdet.engine.builders import build_loss, build_model
from dwdet.losses import DWLoss
from dwdet.models import FCOSDetector, build_fcos
from tests.tool_loader import ROOT, load_tool

compare = load_tool("compare")
vis_weights = load_tool("vis_weights")
bench_train = load_tool("bench_train")

# A comparison that trains in seconds: 8 images of 64 px, one epoch of 4 iterations.
TOY_OPTS = ["data.params.num_train=8", "data.params.num_val=4", "data.params.image_size=64", "train.epochs=1",
            "train.lr_steps=()", "train.batch_size=2", "train.warmup_iters=2", "train.log_interval=1",
            "eval.interval=1", "model.min_size=(64,)", "model.max_size=64"]


def test_every_method_config_loads_and_builds():
    for method in compare.selected_methods("all"):
        cfg = load_config(os.path.join(ROOT, method.config), list(method.overrides))
        model = build_model(cfg)
        if method.name == "torchvision_fcos":
            assert type(model).__name__ == "FCOS"
            continue
        assert isinstance(model, FCOSDetector) and model.head.refine == (method.name == "dw_refine")
        loss = build_loss(cfg)
        if method.config == compare.FCOS_CONFIG:
            assert not isinstance(loss, DWLoss)
        else:
            assert loss.variant == ("paper" if method.name == "dw_paper" else "released")
            expected = method.name[len("wneg_"):] if method.name.startswith("wneg_") else "pneg_ineg"
            assert loss.neg_weighting == expected


def test_methods_are_shared_between_studies_and_single_seed_ones_run_once():
    names = [m.name for m in compare.selected_methods("all")]
    assert len(names) == len(set(names)) and "dw" in names and "wneg_pneg" in names
    runs = compare.planned_runs(compare.selected_methods("wneg"), [0, 1, 2])
    assert sorted((m.name, s) for m, s in runs if m.name != "dw") == [
        ("wneg_ineg", 0), ("wneg_none", 0), ("wneg_one_minus_wpos", 0), ("wneg_pneg", 0)]
    assert [s for m, s in runs if m.name == "dw"] == [0, 1, 2]


def _fake_run(out, method, seed, ap, losses):
    folder = out / method / f"seed{seed}"
    folder.mkdir(parents=True)
    metrics = {k: ap / (i + 1) for i, k in enumerate(compare.METRICS)}
    metrics["APl"] = -1.0 if method == "dw" else metrics["APl"]
    (folder / "result.json").write_text(json.dumps({"method": method, "seed": seed, "opts": [], "minutes": 2.0,
                                                     **metrics}))
    with open(folder / "metrics.jsonl", "w") as f:
        for i, loss in enumerate(losses, 1):
            f.write(json.dumps({"type": "train", "iter": i, "loss": loss}) + "\n")


def test_report_gives_mean_and_sample_std_over_seeds(tmp_path):
    for seed, ap in enumerate((0.30, 0.32, 0.34)):
        _fake_run(tmp_path, "dw", seed, ap, [2.0, 1.0 + seed])
    _fake_run(tmp_path, "fcos", 0, 0.25, [3.0, 2.0])
    summary = compare.report(compare.selected_methods("methods"), str(tmp_path))
    assert list(summary) == ["fcos", "dw"]  # finished methods only, in study order
    assert summary["dw"]["mean"]["AP"] == pytest.approx(32.0)
    assert summary["dw"]["std"]["AP"] == pytest.approx(2.0)  # sample std of 30, 32, 34
    assert summary["dw"]["mean"]["AP50"] == pytest.approx(16.0)
    assert math.isnan(summary["fcos"]["std"]["AP"])
    assert math.isnan(summary["dw"]["mean"]["APl"])  # -1 from COCOeval: no GT of that size
    table = (tmp_path / "results.md").read_text()
    assert "| DW (released) | 3 | 32.0 ± 2.0 | 16.0 ± 1.0 |" in table and "| FCOS | 1 | 25.0 |" in table
    assert "| n/a | 2.0 |" in table
    assert json.loads((tmp_path / "results.json").read_text())["dw"]["seeds"] == [0, 1, 2]
    for png in ("ap.png", "loss.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_runs_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no finished runs"):
        compare.main(["--out", str(tmp_path), "--report-only"])


def test_toy_comparison_end_to_end_then_skips_finished_runs(tmp_path):
    out = tmp_path / "compare"
    opts = TOY_OPTS + [f"data.root={tmp_path / 'data'}"]
    assert compare.main(["--out", str(out), "--seeds", "0", "--jobs", "2", "--opts", *opts]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert list(summary) == [m.name for m in compare.STUDIES["methods"]]
    for name in summary:
        result = json.loads((out / name / "seed0" / "result.json").read_text())
        assert result["opts"] == opts and 0 <= result["AP"] <= 1
    log = out / "dw" / "seed0" / "train.log"
    size = log.stat().st_size
    assert compare.main(["--out", str(out), "--seeds", "0", "--opts", *opts]) == 0  # nothing left to train
    assert log.stat().st_size == size
    # a finished run is never silently mixed with runs under other settings
    assert compare.main(["--out", str(out), "--seeds", "0", "--opts", *opts, "train.lr=0.1"]) == 1
    # the warm-start runs begin from the finished FCOS run's weights
    assert compare.main(["--out", str(out), "--study", "warmstart", "--seeds", "0", "--opts", *opts]) == 0
    for name in ("warm_fcos", "warm_dw"):
        config = json.loads((out / name / "seed0" / "config.json").read_text())
        assert config["train"]["init_from"] == str(out / "fcos" / "seed0" / "last.pth")


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


def test_table1_weights_known_values():
    s, t = torch.tensor([0.5, 0.9]), torch.tensor([0.8, 0.3])
    w = vis_weights.pair_weights(s, t, torch.tensor([0.7, 0.1]), torch.tensor([0.2, 1.0]), 2.0)
    torch.testing.assert_close(w["gfl_pos"], torch.tensor([0.09 * 0.8, 0.36 * 0.3]))
    torch.testing.assert_close(w["gfl_neg"], torch.tensor([0.09 * 0.2, 0.36 * 0.7]))
    torch.testing.assert_close(w["vfl_pos"], torch.tensor([0.64, 0.09]))
    torch.testing.assert_close(w["vfl_neg"], torch.tensor([0.16, 0.21]))
    torch.testing.assert_close(w["dw_neg"], torch.tensor([0.2 * 0.25, 0.81]))
    torch.testing.assert_close(w["dw_pos"], torch.tensor([0.7, 0.1]))


def test_weight_maps_cover_the_bag_with_the_model_scores_and_ious():
    torch.manual_seed(0)
    model = build_fcos(3, DWLoss(3), backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=64,
                       min_size=96, max_size=128)
    image = torch.rand(3, 48, 64)  # resized x2 to 96 x 128
    target = {"boxes": torch.tensor([[4.0, 6.0, 40.0, 30.0], [30.0, 20.0, 60.0, 46.0]]), "labels": torch.tensor([2, 0])}
    maps, map_box = vis_weights.weight_maps(model, image, target, gt=0)
    torch.testing.assert_close(map_box, torch.tensor([8.0, 12.0, 80.0, 60.0]))
    model.eval()
    with torch.no_grad():
        batch, _ = model.transform([image])
        cls, dist, ctr = model.head(list(model.backbone(batch.tensors).values()))
    for level, (level_maps, stride) in enumerate(zip(maps, model.head.strides)):
        inside, pred = boxes_inside(dist[level][0], stride, map_box)
        assert torch.equal(~torch.isnan(level_maps["score"]), inside)
        if not inside.any():
            continue
        score = (cls[level][0, 2].sigmoid() * ctr[level][0, 0].sigmoid())[inside]
        torch.testing.assert_close(level_maps["score"][inside], score)
        iou = box_iou(pred, map_box[None])[:, 0]
        torch.testing.assert_close(level_maps["iou"][inside], iou, atol=1e-5, rtol=1e-4)
        assert (level_maps["dw_pos"][inside] >= 0).all() and (level_maps["dw_neg"][inside] >= 0).all()
    with pytest.raises(ValueError, match="--gt 5"):
        vis_weights.weight_maps(model, image, target, gt=5)


def test_vis_weights_refuses_a_model_without_dw():
    model = build_fcos(3, None, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=32)
    with pytest.raises(ValueError, match="DWLoss"):
        vis_weights.weight_maps(model, torch.rand(3, 32, 32), {"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}, 0)


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
    assert stats["IoU>=0.5"] == (0.5 if best >= 0.5 else 0.0)
    assert 0 <= stats["P_neg=1"] <= 1 and 0 <= stats["score"] <= 1
