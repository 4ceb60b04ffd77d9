"""The comparison (lab/compare.py, lab/runner.py, lab/report.py, lab/studies.py): its studies'
configs, the bookkeeping of runs and records, the report and its paired gaps, and an end-to-end
comparison at toy scale."""
import json
import math
import os

import pytest
import torch

from dwdet.config import load_config
from dwdet.engine.builders import build_loss, build_model
from dwdet.losses import DWLoss
from dwdet.models import FCOSDetector
from lab import compare, report, runner, studies
from lab.runner import REPO as ROOT

# A comparison that trains in seconds: 8 images of 64 px, one epoch of 4 iterations.
TOY_OPTS = ["data.params.num_train=8", "data.params.num_val=4", "data.params.num_test=3", "data.params.image_size=64",
            "train.epochs=1", "train.lr_steps=()", "train.batch_size=2", "train.warmup_iters=2", "train.log_interval=1",
            "eval.interval=1", "model.min_size=(64,)", "model.max_size=64"]


# backbone files fetched by `make imagenet-backbone`, not in the repository: random weights here
FETCHED_WEIGHTS = ("weights/efficientnet_lite0_imagenet.pth",)


def test_along_an_lr_curve_the_lr_alone_varies():
    for study in studies.STUDIES.values():
        curves = {}
        for method in study:
            if method.axis == "lr" and method.curve is not None:
                rest = tuple(o for o in method.overrides if not o.startswith("train.lr="))
                curves.setdefault(method.curve, set()).add((method.config, rest))
        assert all(len(recipes) == 1 for recipes in curves.values()), curves


def test_every_method_config_loads_and_builds():
    for method in runner.selected_methods("all"):
        cfg = load_config(os.path.join(ROOT, method.config), list(method.overrides))
        if cfg.model.backbone_weights in FETCHED_WEIGHTS:
            cfg = cfg.merge({"model": {"backbone_weights": None}})
        model = build_model(cfg)
        if method.name == "torchvision_fcos":
            assert type(model).__name__ == "FCOS"
            continue
        assert isinstance(model, FCOSDetector) and model.head.refine == method.name.endswith("_refine")
        loss = build_loss(cfg)
        if method.config not in (studies.DW_CONFIG, studies.SHAPES80_DW, studies.PATTERNS80_DW,
                                 studies.PATTERNS80_ADAMW_DW, studies.TREECROWNS_DW, studies.TREECROWNS_IMAGENET_DW):
            assert not isinstance(loss, DWLoss) and type(loss).__name__.lower().startswith(cfg.loss.type)
        else:
            assert loss.variant == ("paper" if method.name.endswith("_paper") else "released")
            expected = method.name[len("wneg_"):] if method.name.startswith("wneg_") else "pneg_ineg"
            assert loss.neg_weighting == ("pneg" if method.name.endswith("_pneg") else expected)
            ablated = {"pos1": ("pos_reweight", 1.0), "muden5": ("mu_den", 5.0), "sigma2": ("sigma", 2.0),
                       "sigma06": ("sigma", 0.6), "beta2": ("beta", 2.0)}.get(method.name.rpartition("_")[2])
            if ablated is not None:
                assert getattr(loss, ablated[0]) == ablated[1]
            scale = {"neg4": 4.0, "neg10": 10.0, "neg100": 100.0}.get(method.name.rpartition("_")[2], 1.0)
            assert loss.neg_scale == scale
            reference = studies.COCO_SCORES_PER_OBJECT if "negref" in method.name else None
            assert loss.neg_reference_scores == reference
            assert loss.neg_reference_power == (1.0 if method.name.endswith("_p1") else 0.5)
            assert loss.objectness_target == {"ctr": "centerness", "objiou": "iou"}.get(method.name.rpartition("_")[2], "none")
            assert loss.bag_levels == ("fcos_ranges" if "_levels" in method.name else "all")
        if method.axis == "lr":
            assert cfg.train.lr == method.x and method.curve in method.label
        if method.x is not None and method.axis == "length":
            assert cfg.train.epochs == method.x and cfg.train.epochs % cfg.eval.interval == 0  # the last epoch evaluated
        if method.axis == "scores":  # the class count varies, nothing else
            assert cfg.model.num_classes == round(method.x / studies.PATTERNS80_SCORES_PER_OBJECT * 80)
            assert cfg.data.root.startswith("data/patterns80") and cfg.train.epochs == studies.SHAPES80_EPOCHS
        if method.axis == "objects":  # the objects per image vary, nothing else
            more = set(studies.PATTERNS80_MORE_OBJECTS) <= set(method.overrides)
            assert (cfg.data.params.min_objects, cfg.data.params.max_objects) == ((4, 6) if more else (1, 2))
            assert cfg.model.num_classes == 80 and cfg.train.epochs == studies.SHAPES80_EPOCHS
            assert cfg.data.root == ("data/patterns80-o4to6" if more else "data/patterns80")


def test_methods_are_shared_between_studies_and_single_seed_ones_run_once():
    names = [m.name for m in runner.selected_methods("all")]
    assert len(names) == len(set(names)) and "dw" in names and "wneg_pneg" in names
    runs = runner.planned_runs(runner.selected_methods("wneg"), [0, 1, 2])
    assert sorted((m.name, s) for m, s in runs if m.name != "dw") == [
        ("wneg_ineg", 0), ("wneg_none", 0), ("wneg_one_minus_wpos", 0), ("wneg_pneg", 0)]
    assert [s for m, s in runs if m.name == "dw"] == [0, 1, 2]


def test_length_study_keeps_the_lr_step_at_the_same_fraction():
    steps = {}
    for method in runner.selected_methods("shapes80_length"):
        cfg = load_config(os.path.join(ROOT, method.config), list(method.overrides))
        assert method.curve in ("FCOS", "DW (released)") and cfg.train.epochs == method.x
        steps[method.x] = cfg.train.lr_steps[0] / cfg.train.epochs
        assert method.all_seeds == (method.x == studies.SHAPES80_EPOCHS)  # the full length has 3 seeds
    assert sorted(steps) == [2, 4, 6, 12] and all(abs(f - 5 / 6) <= 1 / 6 for f in steps.values())
    names = {m.name for m in runner.selected_methods("shapes80_length")}
    assert {"s80_fcos", "s80_dw", "s80_fcos_e2", "s80_dw_e12"} <= names  # the full length is the main study's run


def test_adamw_study_changes_only_the_optimizer_and_its_schedule():
    plain = load_config(os.path.join(ROOT, studies.PATTERNS80_FCOS))
    steps, lrs = {}, set()
    for method in runner.selected_methods("patterns80_adamw"):
        cfg = load_config(os.path.join(ROOT, method.config), list(method.overrides))
        assert (cfg.train.optimizer, cfg.train.weight_decay) == ("adamw", 0.05)
        assert cfg.model == plain.model and cfg.data == plain.data  # same backbone weights, same images
        if method.curve is None:  # the lr sweep on the SGD recipe's 6 epochs, in fp32
            assert (cfg.train.epochs, cfg.train.lr_steps, cfg.train.amp) == (6, (5,), "none")
            lrs.add(cfg.train.lr)
        else:
            assert cfg.train.amp == "bf16" and cfg.train.lr == 4e-4 and cfg.train.epochs == method.x
            steps[method.x] = cfg.train.lr_steps[0] / cfg.train.epochs
            assert method.all_seeds == (method.x == studies.PATTERNS80_ADAMW_EPOCHS)
    assert lrs == {1e-3, 4e-4}
    assert sorted(steps) == [4, 7, 14] and all(abs(f - 5 / 6) < 0.1 for f in steps.values())


def test_shapes80_adamw_study_is_the_patterns80_recipe_on_shapes80():
    recipe = load_config(os.path.join(ROOT, studies.PATTERNS80_ADAMW_FCOS))
    for method in runner.selected_methods("shapes80_adamw"):
        plain = load_config(os.path.join(ROOT, method.config))
        cfg = load_config(os.path.join(ROOT, method.config), list(method.overrides))
        assert method.config in (studies.SHAPES80_FCOS, studies.SHAPES80_DW)
        assert cfg.train == recipe.train and cfg.eval == recipe.eval  # the recipe, all of it
        assert cfg.model == plain.model and cfg.data == plain.data  # shapes80's backbone and images


def test_patterns80_adamw_assigners_are_the_recipe_with_each_assigners_loss():
    recipe = load_config(os.path.join(ROOT, studies.PATTERNS80_ADAMW_FCOS))
    kinds = set()
    for method in runner.selected_methods("patterns80_adamw_assigners"):
        if method.trained_weights_of is not None:  # the recipe's own FCOS and DW runs
            continue
        cfg = load_config(os.path.join(ROOT, method.config), list(method.overrides))
        assert cfg.train == recipe.train and cfg.eval == recipe.eval
        assert cfg.model == recipe.model and cfg.data == recipe.data
        kinds.add(cfg.loss.type)
        if cfg.loss.type == "tood":  # its ATSS warm-up: a third of the schedule, as in TOOD's recipe
            assert abs(cfg.loss.warmup_epochs / cfg.train.epochs - 1 / 3) < 0.05
    assert kinds == {"atss", "gfl", "vfl", "tood"}


def test_synthetic128_studies_pair_with_the_benchmarks_plain_runs():
    plain = {name: load_config(os.path.join(ROOT, config)) for name, _, config in studies.SYNTHETIC128}
    warmups = set()
    for study, axis in (("synthetic128_lr", "lr"), ("synthetic128_length", "length"),
                        ("synthetic128_dw_ablation", None)):
        methods = runner.selected_methods(study)
        assert {"fcos", "dw"} <= {m.name for m in methods}  # the five paired seeds already trained
        for method in methods:
            cfg = load_config(os.path.join(ROOT, method.config), list(method.overrides))
            base = plain["fcos" if method.name.startswith("fcos") else "dw"]
            assert cfg.model == base.model and cfg.data == base.data and method.all_seeds
            if method.name in ("fcos", "dw"):
                assert cfg == base
            elif axis == "lr":
                assert cfg.train.lr != base.train.lr and cfg.train.epochs == base.train.epochs
            elif axis == "length":  # a longer schedule, or a DW setting of the ablation at each length
                assert cfg.train.lr == base.train.lr
                assert cfg.train.epochs in (6, 12, 24) and (cfg.train.epochs > 6 or cfg.loss != base.loss)
                assert cfg.loss.get("fcos_warmup_epochs", 0) in (0, cfg.train.epochs // 2)
                setting = {"fcos_warmup_epochs": 0, "bag_levels": "all"}
                assert {**cfg.loss, **setting} == {**base.loss, **setting}
            else:  # an ablation changes DW's loss alone
                assert cfg.train == base.train and cfg.loss != base.loss
                warmups.add(cfg.loss.get("fcos_warmup_epochs", 0))
    # FCOS's loss for up to half of the schedule: DW's own loss always trains the rest
    assert warmups == {0, 1, 2, 3} and max(warmups) <= plain["dw"].train.epochs // 2


def test_length_report_draws_ap_against_length(tmp_path):
    for name, ap in (("s80_fcos_e2", 0.1), ("s80_fcos", 0.3), ("s80_dw_e2", 0.05), ("s80_dw", 0.35)):
        _fake_run(tmp_path, name, 0, ap, [2.0, 1.0])
    summary = report.report(runner.selected_methods("shapes80_length"), str(tmp_path))
    assert (tmp_path / "ap_vs_length.png").stat().st_size > 1000
    # a curve's points share its label; tables and bar charts name each point's length
    assert summary["s80_fcos_e2"]["label"] == "FCOS, 2 epochs" and summary["s80_dw"]["label"] == "DW (released), 6 epochs"
    # each point of DW's curve is paired with FCOS's point of the same length; FCOS's own points are not
    assert summary["s80_dw_e2"]["paired"]["baseline"] == "s80_fcos_e2"
    assert summary["s80_dw"]["paired"]["baseline"] == "s80_fcos"
    assert summary["s80_dw"]["paired"]["gap"]["AP"][0] == pytest.approx(5.0) and "paired" not in summary["s80_fcos"]


def _fake_run(out, method, seed, ap, losses):
    folder = out / method / f"seed{seed}"
    folder.mkdir(parents=True)
    metrics = {k: ap / (i + 1) for i, k in enumerate(runner.METRICS)}
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
    summary = report.report(runner.selected_methods("methods"), str(tmp_path))
    assert list(summary) == ["fcos", "dw"]  # finished methods only, in study order
    assert summary["dw"]["mean"]["AP"] == pytest.approx(32.0)
    assert summary["dw"]["std"]["AP"] == pytest.approx(2.0)  # sample std of 30, 32, 34
    assert summary["dw"]["mean"]["AP50"] == pytest.approx(16.0)
    assert math.isnan(summary["fcos"]["std"]["AP"])
    assert math.isnan(summary["dw"]["mean"]["APl"])  # -1 from COCOeval: no GT of that size
    table = (tmp_path / "results.md").read_text()
    assert "| DW (released) | 3 | 32.0 ± 2.0 | 16.0 ± 1.0 |" in table and "| FCOS | 1 | 25.0 |" in table
    assert "| n/a | 30.0, 32.0, 34.0 | 2.0 |" in table  # APl n/a, then each seed's AP
    assert json.loads((tmp_path / "results.json").read_text())["dw"]["seeds"] == [0, 1, 2]
    for png in ("ap.png", "loss.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def t_quantile(df, p=0.975):
    """Student's t quantile by bisection on its CDF, the density integrated numerically (Simpson):
    independent of lab/report.py's table."""
    density = lambda t: math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) \
        * (1 + t * t / df) ** (-(df + 1) / 2)  # noqa: E731

    def cdf(x, n=4000):
        h = x / n
        return 0.5 + h / 3 * sum((1 if i in (0, n) else 4 if i % 2 else 2) * density(i * h) for i in range(n + 1))

    low, high = 0.0, 20.0
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return low


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 30, 31, 60])
def test_t_quantile_matches_the_t_distribution(df):
    assert report.t975(df) == pytest.approx(t_quantile(df), abs=2e-3)


def test_paired_gap_and_its_interval():
    mean, low, high = report.paired_gap([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])  # gaps 1, 2, 3: sd 1
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / math.sqrt(3)) and mean - low == pytest.approx(high - mean)
    assert math.isnan(report.paired_gap([2.0], [1.0])[1])
    with pytest.raises(ValueError):
        report.paired_gap([1.0, 2.0], [1.0])


def test_report_gives_the_paired_gap_on_shared_seeds_and_calls_wins(tmp_path):
    # DW beats FCOS by 2, 3 and 4 AP on seeds 0-2 (a win); its seed 3 has no FCOS pair and is left out
    for seed, (fcos, dw) in enumerate(((0.30, 0.32), (0.31, 0.34), (0.29, 0.33), (None, 0.10))):
        _fake_run(tmp_path, "dw", seed, dw, [1.0])
        if fcos is not None:
            _fake_run(tmp_path, "fcos", seed, fcos, [1.0])
    summary = report.report(runner.selected_methods("methods"), str(tmp_path))
    paired = summary["dw"]["paired"]
    assert paired["baseline"] == "fcos" and paired["seeds"] == [0, 1, 2]
    mean, low, high = paired["gap"]["AP"]
    assert mean == pytest.approx(3.0) and high - mean == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert paired["gap"]["APl"] is None  # dw's APl is COCOeval's -1
    table = (tmp_path / "results.md").read_text()
    assert "| DW (released) − FCOS | 3 | +3.0 [+0.5, +5.5] win |" in table
    # against DW as the baseline, the same gap is a loss
    summary = report.report(runner.selected_methods("methods"), str(tmp_path), baseline="dw")
    assert "| FCOS − DW (released) | 3 | -3.0 [-5.5, -0.5] loss |" in (tmp_path / "results.md").read_text()


def test_pairs_trained_on_several_cpu_types_are_counted_in_the_seeds_cell():
    def record(method, seed, cpu):
        env = {"cpu": "AMD EPYC", "cpu_capability": cpu} if cpu else {}
        return {"method": method, "seed": seed, "environment": env, **{k: 0.3 for k in runner.METRICS}}

    methods = runner.selected_methods("methods")
    one = {(m, s): record(m, s, "AVX512") for m in ("fcos", "dw") for s in (0, 1)}
    one[("dw", 2)], one[("fcos", 2)] = record("dw", 2, None), record("fcos", 2, None)  # unrecorded: not a type
    gaps = report.paired_gaps(report.summarize(methods, None, one), "fcos")
    assert gaps["dw"]["machines"] == ["AMD EPYC, AVX512"]
    assert report.seeds_cell(len(gaps["dw"]["seeds"]), gaps["dw"]["machines"]) == "3"
    mixed = {**one, ("dw", 1): record("dw", 1, "AVX2")}
    gaps = report.paired_gaps(report.summarize(methods, None, mixed), "fcos")
    assert len(gaps["dw"]["machines"]) == 2
    assert report.seeds_cell(len(gaps["dw"]["seeds"]), gaps["dw"]["machines"]) == "3 (2 CPU types)"


def test_report_of_the_test_split_uses_the_test_metrics_and_marks_transcribed_records(tmp_path):
    records = [{"method": "fcos", "seed": 0, "AP": 0.5, "test": {k: 0.2 for k in runner.METRICS}},
               {"method": "fcos", "seed": 1, "AP": 0.5, "transcribed": True, "test": {k: 0.3 for k in runner.METRICS}},
               {"method": "dw", "seed": 0, "AP": 0.5}]  # not evaluated on test: not in its report
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = report.report(runner.selected_methods("methods"), str(tmp_path / "out"),
                             runner.read_records([str(tmp_path / "runs.jsonl")]), split="test")
    assert list(summary) == ["fcos"] and summary["fcos"]["mean"]["AP"] == pytest.approx(25.0)
    assert "| FCOS | 2 (1 transcribed) | 25.0 ± 7.1 |" in (tmp_path / "out" / "results_test.md").read_text()
    assert not (tmp_path / "out" / "results.md").exists()


def test_split_overrides_name_each_benchmarks_test_split(tmp_path):
    tc = studies.STUDIES["treecrowns"][0]
    assert runner.split_overrides(tc, [], "test") == [
        "data.type=coco", f"data.val_images={runner.REPO / 'data/treecrowns/test'}",
        f"data.val_ann={runner.REPO / 'data/treecrowns/annotations/instances_test.json'}"]
    fcos = studies.STUDIES["methods"][0]
    with pytest.raises(RuntimeError, match="data.params.num_test is 0, the benchmark has no test split"):
        runner.split_overrides(fcos, ["data.params.num_test=0"], "test")
    overrides = runner.split_overrides(fcos, TOY_OPTS + ["data.params.num_test=2", f"data.root={tmp_path}"], "test")
    assert overrides[1:] == [f"data.val_images={tmp_path / 'test'}",
                             f"data.val_ann={tmp_path / 'annotations' / 'instances_test.json'}"]
    assert len(list((tmp_path / "test").iterdir())) == 2  # generated for the evaluation


def test_run_records_rebuild_the_report_without_the_run_folders(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for seed, ap in enumerate((0.30, 0.32, 0.34)):
        _fake_run(first, "dw", seed, ap, [2.0, 1.0])
    _fake_run(first, "fcos", 0, 0.25, [3.0, 2.0])
    before = report.report(runner.selected_methods("methods"), str(first))
    records = runner.read_records([str(first / "runs.jsonl")])
    assert sorted(records) == [("dw", 0), ("dw", 1), ("dw", 2), ("fcos", 0)]
    # another checkout: its own run of dw seed 1 (AP 0.40) wins over the record of that seed
    _fake_run(second, "dw", 1, 0.40, [2.0, 1.5])
    after = report.report(runner.selected_methods("methods"), str(second), records)
    assert before["fcos"]["mean"] == after["fcos"]["mean"]
    assert after["dw"]["ap_per_seed"] == pytest.approx([30.0, 40.0, 34.0])
    assert after["dw"]["mean"]["AP"] == pytest.approx(104 / 3)
    assert (second / "loss.png").stat().st_size > 1000  # curves from the run folders only


def test_a_record_without_a_metric_gives_na_not_a_number(tmp_path):
    (tmp_path / "runs.jsonl").write_text(json.dumps({"method": "fcos", "seed": 0, "AP": 0.2, "AP50": 0.4}) + "\n")
    summary = report.report(runner.selected_methods("methods"), str(tmp_path / "out"),
                             runner.read_records([str(tmp_path / "runs.jsonl")]))
    assert summary["fcos"]["mean"]["AP"] == pytest.approx(20.0) and math.isnan(summary["fcos"]["mean"]["AP75"])
    assert "| FCOS | 1 | 20.0 | 40.0 | n/a |" in (tmp_path / "out" / "results.md").read_text()


def test_bad_record_files_are_named(tmp_path):
    with pytest.raises(SystemExit, match="missing.jsonl: cannot read it"):
        runner.read_records([str(tmp_path / "missing.jsonl")])
    (tmp_path / "bad.jsonl").write_text('{"method": "dw", "seed": 0, "AP": 0.1}\n{"seed": 1, "AP": 0.1}\n')
    with pytest.raises(SystemExit, match="bad.jsonl, line 2: not a run record"):
        runner.read_records([str(tmp_path / "bad.jsonl")])
    (tmp_path / "no_ap.jsonl").write_text('{"method": "dw", "seed": 0}\n')
    with pytest.raises(SystemExit, match="no_ap.jsonl, line 1: .*'AP'"):
        runner.read_records([str(tmp_path / "no_ap.jsonl")])


def test_report_without_runs_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no finished runs"):
        compare.main(["--out", str(tmp_path), "--report-only"])


def test_methods_trains_a_subset_of_the_study(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(compare, "train", lambda method, seed, *rest: trained.append((method.name, seed)))
    monkeypatch.setattr(compare, "report", lambda methods, out, records, *rest: [m.name for m in methods])
    assert compare.main(["--study", "shapes80_length", "--methods", "s80_dw_e12", "s80_fcos_e2", "--seeds", "0", "1",
                         "--out", str(tmp_path)]) == 0
    assert sorted(trained) == [("s80_dw_e12", 0), ("s80_fcos_e2", 0)]  # single-seed lengths: the first seed


def test_threads_per_training_default_to_the_machine_shared_by_the_jobs(tmp_path, monkeypatch, capsys):
    threads = []
    monkeypatch.setattr(compare, "train", lambda method, seed, out, opts, n, *rest: threads.append(n))
    monkeypatch.setattr(compare, "report", lambda *args, **kwargs: None)
    args = ["--study", "shapes80", "--seeds", "0", "--out", str(tmp_path), "--jobs", "2"]
    assert compare.main(args) == 0
    assert set(threads) == {max(1, (os.cpu_count() or 1) // 2)}
    threads.clear()
    assert compare.main([*args, "--threads", "1"]) == 0  # another compare shares the machine
    assert set(threads) == {1}
    with pytest.raises(SystemExit):
        compare.parse_args([*args, "--threads", "0"])
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_methods_outside_the_study_are_named(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--study", "shapes80", "--methods", "s80_dw", "wneg_none"])
    assert "--methods wneg_none: not in study 'shapes80'" in capsys.readouterr().err


def test_toy_comparison_end_to_end_then_skips_finished_runs(tmp_path, monkeypatch):
    out = tmp_path / "compare"
    opts = TOY_OPTS + [f"data.root={tmp_path / 'data'}"]
    assert compare.main(["--out", str(out), "--seeds", "0", "--jobs", "2", "--opts", *opts]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert list(summary) == [m.name for m in studies.STUDIES["methods"]]
    for name in summary:
        result = json.loads((out / name / "seed0" / "result.json").read_text())
        assert result["opts"] == opts and 0 <= result["AP"] <= 1
        assert len(result["AP_per_iou"]) == 10 and result["AP_per_iou"]["0.50"] == result["AP50"]
        # where the run came from, and its first logged loss to tell same-seed runs apart
        assert result["environment"]["threads"] == max(1, (os.cpu_count() or 1) // 2)
        first = json.loads((out / name / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
        assert result["first_loss"] == {"iter": first["iter"], "loss": first["loss"]}
    log = out / "dw" / "seed0" / "train.log"
    records = [line for line in log.read_text().splitlines() if "type=train" in line]
    assert records and len(set(records)) == len(records)  # each logged once, the console kept apart
    assert "Traceback" not in (out / "dw" / "seed0" / "console.log").read_text()
    size = log.stat().st_size
    assert compare.main(["--out", str(out), "--seeds", "0", "--opts", *opts]) == 0  # nothing left to train
    assert log.stat().st_size == size
    # a finished run is never silently mixed with runs under other settings
    assert compare.main(["--out", str(out), "--seeds", "0", "--opts", *opts, "train.lr=0.1"]) == 1
    # the test split: each finished run's last.pth evaluated there once, its metrics in its record
    assert compare.main(["--out", str(out), "--seeds", "0", "--methods", "fcos", "dw", "--split", "test",
                         "--opts", *opts]) == 0
    for name in ("fcos", "dw"):
        result = json.loads((out / name / "seed0" / "result.json").read_text())
        stored = json.loads((out / name / "seed0" / "test" / "metrics_last.json").read_text())
        assert result["test"]["AP"] == stored["AP"] and 0 <= stored["AP"] <= 1
        assert result["test"]["AP_per_iou"] == stored["AP_per_iou"]
        # what measured it: the evaluation's own checkout, machine and threads, not the training's
        assert result["test"]["evaluation_environment"] == {k: stored["environment"][k] for k in runner.RUN_ENVIRONMENT}
        assert result["test"]["evaluation_environment"]["threads"] == (os.cpu_count() or 1)
        assert f"data.val_ann={tmp_path / 'data' / 'annotations' / 'instances_test.json'}" in result["test"]["command"]
        assert result["config"] == json.loads((out / name / "seed0" / "config.json").read_text())
    assert "| FCOS | 1 |" in (out / "results_test.md").read_text()
    log = out / "dw" / "seed0" / "test.log"
    size = log.stat().st_mtime_ns
    assert compare.main(["--out", str(out), "--seeds", "0", "--methods", "dw", "--split", "test", "--opts", *opts]) == 0
    assert log.stat().st_mtime_ns == size  # evaluated once
    # the warm-start runs begin from the finished FCOS run's weights
    assert compare.main(["--out", str(out), "--study", "warmstart", "--seeds", "0", "--opts", *opts]) == 0
    for name in ("warm_fcos", "warm_dw"):
        config = json.loads((out / name / "seed0" / "config.json").read_text())
        assert config["train"]["init_from"] == str(out / "fcos" / "seed0" / "last.pth")
    # a run with the weight average, and its trained weights as a method of their own: those are
    # the plain run's weights (the average never feeds back), so they score what "fcos" scored
    fcos = studies.STUDIES["methods"][0]
    ema = (*fcos.overrides, "train.ema=True", "train.ema_decay=0.5", "train.ema_tau=1.0")
    monkeypatch.setitem(studies.STUDIES, "toy_ema", (
        studies.Method("fcos_trained", "FCOS", fcos.config, ema, trained_weights_of="fcos_ema"),
        studies.Method("fcos_ema", "FCOS, weight average", fcos.config, ema),
        studies.Method("fcos_cls_only", "FCOS, ranked by the class score", fcos.config, ema,
                       trained_weights_of="fcos_ema", inference=("model.objectness_power=0.0",))))
    assert compare.main(["--out", str(out), "--study", "toy_ema", "--seeds", "0", "--split", "test", "--opts", *opts]) == 0
    plain = json.loads((out / "fcos" / "seed0" / "result.json").read_text())
    trained = json.loads((out / "fcos_trained" / "seed0" / "result.json").read_text())
    average = json.loads((out / "fcos_ema" / "seed0" / "result.json").read_text())
    assert trained["trained_weights_of"] == str(out / "fcos_ema" / "seed0") and "--trained-weights" in trained["command"]
    assert {k: trained[k] for k in runner.METRICS} == {k: plain[k] for k in runner.METRICS}
    assert trained["test"]["AP"] == plain["test"]["AP"] and "--trained-weights" in trained["test"]["command"]
    assert "--trained-weights" not in average["test"]["command"]
    assert trained["environment"] == average["environment"] and trained["config"] == average["config"]
    evaluated = json.loads((out / "fcos_trained" / "seed0" / "val" / "metrics_last_trained.json").read_text())
    assert trained["evaluation_environment"] == {k: evaluated["environment"][k] for k in runner.RUN_ENVIRONMENT}
    # an inference setting on the same trained weights, on val and on test
    cls_only = json.loads((out / "fcos_cls_only" / "seed0" / "result.json").read_text())
    for command in (cls_only["command"], cls_only["test"]["command"]):
        assert "--trained-weights" in command and command[-3:-2] == ["model.objectness_power=0.0"]
    assert "model.objectness_power" not in " ".join(trained["command"])
    with pytest.raises(ValueError, match="inference settings need trained_weights_of"):
        studies.Method("x", "x", fcos.config, inference=("model.objectness_power=0.0",))


@pytest.mark.parametrize("study, names", [("patterns80_adamw", ("p80a_fcos", "p80a_dw")),
                                          ("treecrowns", ("tc_fcos", "tc_dw"))])
def test_a_seed_gives_fcos_and_dw_the_same_initial_weights(study, names):
    # what makes their gap a paired one: the trainer seeds, then builds the model
    from dwdet.engine.trainer import seed_everything
    weights = []
    for method in (m for m in studies.STUDIES[study] if m.name in names):
        seed_everything(3)
        weights.append(build_model(load_config(os.path.join(ROOT, method.config), list(method.overrides))).state_dict())
    assert len(weights) == 2 and weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_runs_are_planned_seed_by_seed_so_a_stopped_study_leaves_whole_pairs():
    runs = runner.planned_runs(runner.selected_methods("patterns80_ema"), [3, 4])
    names = ["p80a_fcos_trained", "p80a_dw_trained", "p80a_fcos_ema", "p80a_dw_ema"]
    assert [(m.name, s) for m, s in runs] == [(name, seed) for seed in (3, 4) for name in names]


def test_merge_into_adds_the_reports_runs_to_a_records_file_and_keeps_its_test_evaluations(tmp_path):
    out, target = tmp_path / "out", tmp_path / "page_runs.jsonl"
    _fake_run(out, "dw", 0, 0.30, [2.0, 1.0])
    _fake_run(out, "fcos", 0, 0.25, [3.0, 2.0])
    target.write_text(json.dumps({"method": "dw", "seed": 0, "AP": 0.10, "test": {"AP": 0.28}}) + "\n"
                      + json.dumps({"method": "other_study", "seed": 3, "AP": 0.5}) + "\n")
    assert compare.main(["--out", str(out), "--report-only", "--merge-into", str(target)]) == 0
    merged = runner.read_records([str(target)])
    assert sorted(merged) == [("dw", 0), ("fcos", 0), ("other_study", 3)]
    assert merged[("dw", 0)]["AP"] == pytest.approx(0.30)  # the run wins over the old record
    assert merged[("dw", 0)]["test"] == {"AP": 0.28}  # but its test evaluation is kept
    assert "test" not in merged[("fcos", 0)] and merged[("other_study", 3)]["AP"] == 0.5
    # merging again changes nothing
    before = target.read_text()
    assert compare.main(["--out", str(out), "--report-only", "--merge-into", str(target)]) == 0
    assert target.read_text() == before
