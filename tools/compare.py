"""The label-assignment comparison on the synthetic benchmark: train every method with several
seeds on the same backbone, data and schedule, then tabulate COCO AP (mean ± std over seeds) and
draw a bar chart and the loss curves.

    python tools/compare.py                          # the methods study, 3 seeds, then the report
    python tools/compare.py --study wneg             # table 5's w_neg ablation
    python tools/compare.py --study neg              # DW with its negative term x10, x100 and as on COCO
    python tools/compare.py --study warmstart        # FCOS vs DW continuing from the FCOS weights
    python tools/compare.py --study assigners        # FCOS, ATSS, GFL, VFL, TOOD and DW side by side
    python tools/compare.py --study shapes80 --jobs 2  # FCOS vs DW on shapes80 (also shapes80_length,
                                                     # shapes80_neg, shapes80_assigners)
    python tools/compare.py --jobs 2 --opts train.epochs=24 model.min_size='(256,)' model.max_size=256
    python tools/compare.py --study patterns80_adamw --methods p80a_fcos p80a_dw --jobs 2  # the 20-minute recipe
    python tools/compare.py --study shapes80_adamw --seeds 0 --jobs 2  # that recipe on shapes80
    python tools/compare.py --study shapes80_length --methods s80_fcos_e12 s80_dw_e12 --seeds 0 --jobs 2
    python tools/compare.py --report-only            # rebuild the report from finished runs
    python tools/compare.py --study patterns80_assigners --report-only --records docs/results/patterns80_runs.jsonl

Each run is ``tools/train.py <config> <overrides> train.seed=<seed>`` in
``<out>/<method>/seed<seed>`` with its log in ``train.log`` there; a finished run (``result.json``)
is skipped and an interrupted one resumes from its ``last.pth``, so the command can simply be
rerun. ``--jobs`` runs that many trainings at once, sharing the CPU threads between them (on a GPU
machine keep ``--jobs 1``). ``--opts`` applies to every run (e.g. a longer schedule or larger
images on a GPU). The report is ``results.json``, ``results.md``, ``ap.png`` and ``loss.png`` in
``<out>``, and ``runs.jsonl``: one line per finished run (its result.json). Those lines are small
enough to keep beside the docs when the run folders go; ``--records`` reads them back, so a report
can cover runs made in another checkout (a run folder under ``<out>`` wins over a record of the
same method and seed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from dwdet.engine.metrics import read_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DW_CONFIG = "configs/compare_r18_synthetic.py"  # from scratch, 128 px, 8 classes
FCOS_CONFIG = "configs/compare_fcos_r18_synthetic.py"
SHAPES80_DW = "configs/dw_r10_shapes80.py"  # COCO's statistics, pretrained backbone
SHAPES80_FCOS = "configs/fcos_r10_shapes80.py"
SHAPES80_EPOCHS = 6
PATTERNS80_DW = "configs/dw_r10_patterns80.py"  # the same statistics, classes readable as textures
PATTERNS80_FCOS = "configs/fcos_r10_patterns80.py"
PATTERNS80_ADAMW_DW = "configs/dw_r10_patterns80_adamw.py"  # the recipe that fits 20 minutes of this CPU
PATTERNS80_ADAMW_FCOS = "configs/fcos_r10_patterns80_adamw.py"
PATTERNS80_ADAMW_EPOCHS = 14
ADAMW = ("train.optimizer=adamw", "train.weight_decay=0.05")  # AdamW on the SGD recipe's schedule (6 epochs, fp32)
COCO_SCORES_PER_OBJECT = 2.4e5  # docs/benchmarks.md, the shapes80 statistics
PATTERNS80_SCORES_PER_OBJECT = 1.41e5  # tools/dataset_stats.py configs/dw_r10_patterns80.py
PATTERNS80_MORE_OBJECTS = ("data.params.min_objects=4", "data.params.max_objects=6", "data.root=data/patterns80-o4to6")
PATTERNS80_MORE_OBJECTS_SCORES = 4.38e4  # the same, with the overrides above (4.70 objects per image)
# the "assigners" study's configs: point them at another benchmark by changing these
ASSIGNER_CONFIGS = {"fcos": FCOS_CONFIG, "atss": "configs/compare_atss_r18_synthetic.py",
                    "gfl": "configs/compare_gfl_r18_synthetic.py", "vfl": "configs/compare_vfl_r18_synthetic.py",
                    "tood": "configs/compare_tood_r18_synthetic.py", "dw": DW_CONFIG}
# DW's negative term at the strength it has on COCO, whatever the scores per object (loss.neg_reference_scores)
NEG_AS_ON_COCO = (f"loss.neg_reference_scores={COCO_SCORES_PER_OBJECT:g}",)
# a curve's axis: label, plot file, log scale, a reference (x, label) or None, and how a point on
# it names itself in tables
AXES = {"length": ("training length (epochs; lr step at 5/6 of each)", "ap_vs_length.png", False, None, "{:g} epochs"),
        "scores": ("(point, class) scores per object (the class count varied)", "ap_vs_scores_per_object.png", True,
                   (COCO_SCORES_PER_OBJECT, "COCO train2017"), "{:.2g} scores per object"),
        "objects": ("(point, class) scores per object (objects per image varied)", "ap_vs_objects_per_image.png",
                    True, (COCO_SCORES_PER_OBJECT, "COCO train2017"), "{:.2g} scores per object")}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# what of a run's environment.json its record keeps: what decides its arithmetic
RUN_ENVIRONMENT = ("git_revision", "git_dirty", "torch", "threads", "cpu", "cpu_capability", "onednn_max_cpu_isa")
WARM_START = ("train.epochs=3", "train.lr=0.01", "train.warmup_iters=50", "train.lr_steps=(2,)", "eval.interval=3",
              "train.checkpoint_interval=3")


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    config: str
    overrides: tuple[str, ...] = ()
    all_seeds: bool = True  # False: only the first seed (single-seed reference points)
    init_from: str | None = None  # a method whose finished run of the same seed gives the initial weights
    curve: str | None = None  # methods of one curve label are one method at several points of an axis
    x: float | None = None  # its place on the curve's axis
    axis: str = "length"  # the curve's axis, a key of AXES


def schedule(epochs: int, step_fraction: float = 5 / 6) -> tuple[str, ...]:
    """Overrides for a run of ``epochs`` epochs with its lr step at the same fraction of every length."""
    step = max(1, round(step_fraction * epochs))
    return (f"train.epochs={epochs}", f"train.lr_steps=({step},)", f"eval.interval={epochs}",
            f"train.checkpoint_interval={epochs}")


# the patterns80 AdamW configs' recipe as overrides, for the other benchmarks
ADAMW_RECIPE = (*ADAMW, "train.lr=4e-4", "train.amp=bf16", *schedule(PATTERNS80_ADAMW_EPOCHS))


def length_study(lengths: tuple[int, ...]) -> tuple[Method, ...]:
    """FCOS and DW on shapes80 for each training length (one seed each; the full length is the
    3-seed run of the shapes80 study)."""
    return tuple(Method(f"{name}_e{epochs}" if epochs != SHAPES80_EPOCHS else name, label, config,
                        schedule(epochs) if epochs != SHAPES80_EPOCHS else (),
                        all_seeds=epochs == SHAPES80_EPOCHS, curve=label, x=epochs)
                 for name, label, config in (("s80_fcos", "FCOS", SHAPES80_FCOS), ("s80_dw", "DW (released)", SHAPES80_DW))
                 for epochs in lengths)


def adamw_study(lengths: tuple[int, ...]) -> tuple[Method, ...]:
    """FCOS and DW on patterns80 with the AdamW recipe at several lengths (the full length with
    every seed, the shorter ones with the first), and FCOS with AdamW on the SGD recipe's 6 epochs at
    two learning rates, the sweep that chose the recipe's lr (first seed)."""
    sweep = tuple(Method(f"p80_fcos_adamw_lr{lr}", f"FCOS, AdamW lr {lr}, 6 epochs fp32", PATTERNS80_FCOS,
                         (*ADAMW, f"train.lr={lr}"), all_seeds=False) for lr in ("1e-3", "4e-4"))
    curves = tuple(Method(f"{name}_e{epochs}" if epochs != PATTERNS80_ADAMW_EPOCHS else name, label, config,
                          schedule(epochs) if epochs != PATTERNS80_ADAMW_EPOCHS else (),
                          all_seeds=epochs == PATTERNS80_ADAMW_EPOCHS, curve=label, x=epochs)
                   for name, label, config in (("p80a_fcos", "FCOS", PATTERNS80_ADAMW_FCOS),
                                               ("p80a_dw", "DW (released)", PATTERNS80_ADAMW_DW))
                   for epochs in lengths)
    return sweep + curves


def objects_study() -> tuple[Method, ...]:
    """FCOS and DW on patterns80 with 1-2 objects per image (the 3-seed runs of the patterns80
    study) and 4-6 (one seed), nothing else changed; the x is the (point, class) scores per object."""
    return tuple(Method(name + suffix, label, config, overrides, all_seeds=not overrides, curve=label, x=x, axis="objects")
                 for name, label, config in (("p80_fcos", "FCOS", PATTERNS80_FCOS), ("p80_dw", "DW (released)", PATTERNS80_DW))
                 for suffix, overrides, x in (("", (), PATTERNS80_SCORES_PER_OBJECT),
                                              ("_o4to6", PATTERNS80_MORE_OBJECTS, PATTERNS80_MORE_OBJECTS_SCORES)))


def class_count_study() -> tuple[Method, ...]:
    """FCOS and DW on patterns80 with 80, 8 and 1 annotated classes (one seed each below 80; 80 is
    the 3-seed run of the patterns80 study). The x is the (point, class) scores per object."""
    scores_per_class = PATTERNS80_SCORES_PER_OBJECT / 80
    variants = ((80, "class"), (8, "kind"), (1, "object"))
    return tuple(Method(name if classes == 80 else f"{name}_c{classes}", f"{label}, {classes} class{'es' * (classes > 1)}",
                        config,
                        () if classes == 80 else (f"data.params.labels={labels}", f"model.num_classes={classes}",
                                                  f"data.root=data/patterns80-{labels}"),
                        all_seeds=classes == 80, curve=label, x=classes * scores_per_class, axis="scores")
                 for name, label, config in (("p80_fcos", "FCOS", PATTERNS80_FCOS), ("p80_dw", "DW (released)", PATTERNS80_DW))
                 for classes, labels in variants)


STUDIES = {
    "methods": (
        Method("fcos", "FCOS", FCOS_CONFIG),
        Method("dw", "DW (released)", DW_CONFIG),
        Method("dw_paper", "DW (paper)", DW_CONFIG, ("loss.variant=paper",), False),
        Method("dw_refine", "DW + refine", DW_CONFIG, ("model.refine=True",), False),
        Method("torchvision_fcos", "torchvision FCOS", FCOS_CONFIG, ("model.type=torchvision_fcos",), False),
    ),
    # table 5 of the paper; its last row (P_neg and I_neg) is the "dw" method above
    "wneg": (
        Method("wneg_none", "w_pos only", DW_CONFIG, ("loss.neg_weighting=none",), False),
        Method("wneg_pneg", "P_neg", DW_CONFIG, ("loss.neg_weighting=pneg",), False),
        Method("wneg_ineg", "I_neg", DW_CONFIG, ("loss.neg_weighting=ineg",), False),
        Method("wneg_one_minus_wpos", "1 - w_pos", DW_CONFIG, ("loss.neg_weighting=one_minus_wpos",), False),
        Method("dw", "P_neg * I_neg (DW)", DW_CONFIG),
    ),
    # background pressure at 128 px: scaling the negative term up gives each object the pressure
    # of many more (point, class) scores, as on COCO
    "neg": (
        Method("dw", "DW (released)", DW_CONFIG),
        Method("dw_neg10", "DW, negative x10", DW_CONFIG, ("loss.neg_scale=10.0",)),
        Method("dw_neg100", "DW, negative x100", DW_CONFIG, ("loss.neg_scale=100.0",)),
        Method("dw_negref", "DW, negative as on COCO (square root)", DW_CONFIG, NEG_AS_ON_COCO),
        Method("dw_negref_p1", "DW, negative as on COCO (linear)", DW_CONFIG,
               (*NEG_AS_ON_COCO, "loss.neg_reference_power=1.0"), False),
    ),
    # the paper's tables 1 and 6: hard (FCOS, ATSS) and soft (GFL, VFL, TOOD) assignment beside DW
    "assigners": (
        Method("fcos", "FCOS", ASSIGNER_CONFIGS["fcos"]),
        Method("atss", "ATSS", ASSIGNER_CONFIGS["atss"]),
        Method("gfl", "GFL", ASSIGNER_CONFIGS["gfl"]),
        Method("vfl", "VFL", ASSIGNER_CONFIGS["vfl"]),
        Method("tood", "TOOD", ASSIGNER_CONFIGS["tood"]),
        Method("dw", "DW (released)", ASSIGNER_CONFIGS["dw"]),
    ),
    # Does DW help once the detector is past its first steps? Both continue from the FCOS run's
    # weights for 3 more epochs; they differ only in the loss.
    "warmstart": (
        Method("fcos", "FCOS", FCOS_CONFIG),
        Method("warm_fcos", "FCOS, 3 more epochs", FCOS_CONFIG, WARM_START, False, init_from="fcos"),
        Method("warm_dw", "DW, 3 epochs from the FCOS weights", DW_CONFIG, WARM_START, False, init_from="fcos"),
    ),
    # shapes80: COCO's statistics and a pretrained backbone
    "shapes80": (
        Method("s80_fcos", "FCOS", SHAPES80_FCOS),
        Method("s80_dw", "DW (released)", SHAPES80_DW),
    ),
    "shapes80_length": length_study((2, 4, SHAPES80_EPOCHS, 12)),
    # the assigners on shapes80, as the paper compares them (its tables 1 and 6)
    "shapes80_assigners": (
        Method("s80_fcos", "FCOS", SHAPES80_FCOS),
        *(Method(f"s80_{kind}", kind.upper(), f"configs/{kind}_r10_shapes80.py") for kind in ("atss", "gfl", "vfl", "tood")),
        Method("s80_dw", "DW (released)", SHAPES80_DW),
    ),
    # patterns80: shapes80's statistics, classes a detector can read at every point of an object
    "patterns80": (
        Method("p80_fcos", "FCOS", PATTERNS80_FCOS),
        Method("p80_dw", "DW (released)", PATTERNS80_DW),
    ),
    # the same with AdamW, bf16 and 14 epochs: the recipe that fits 20 minutes on two cores
    "patterns80_adamw": adamw_study((4, 7, PATTERNS80_ADAMW_EPOCHS)),
    # the same recipe on shapes80, where DW trailed FCOS with SGD at every length
    "shapes80_adamw": (
        Method("s80a_fcos", "FCOS", SHAPES80_FCOS, ADAMW_RECIPE, all_seeds=False),
        Method("s80a_dw", "DW (released)", SHAPES80_DW, ADAMW_RECIPE, all_seeds=False),
    ),
    "patterns80_assigners": (
        Method("p80_fcos", "FCOS", PATTERNS80_FCOS),
        *(Method(f"p80_{kind}", kind.upper(), f"configs/{kind}_r10_patterns80.py") for kind in ("atss", "gfl", "vfl", "tood")),
        Method("p80_dw", "DW (released)", PATTERNS80_DW),
    ),
    # AP against (point, class) scores per object: the same images and backbone, the annotations
    # naming 80 classes (pattern x hue), 8 (the pattern) or 1 ("object")
    "patterns80_classes": class_count_study(),
    # the same with 4-6 objects per image instead of 1-2 (the images' sizes and classes as they were)
    "patterns80_objects": objects_study(),
    # background pressure: DW's negative term scaled up
    "shapes80_neg": (
        Method("s80_dw", "DW (released)", SHAPES80_DW),
        Method("s80_dw_neg10", "DW, negative x10", SHAPES80_DW, ("loss.neg_scale=10.0",)),
        Method("s80_dw_neg100", "DW, negative x100", SHAPES80_DW, ("loss.neg_scale=100.0",)),
    ),
    "patterns80_neg": (
        Method("p80_dw", "DW (released)", PATTERNS80_DW),
        Method("p80_dw_neg10", "DW, negative x10", PATTERNS80_DW, ("loss.neg_scale=10.0",)),
        Method("p80_dw_neg100", "DW, negative x100", PATTERNS80_DW, ("loss.neg_scale=100.0",)),
        Method("p80_dw_negref", "DW, negative as on COCO (square root)", PATTERNS80_DW, NEG_AS_ON_COCO),
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=[*STUDIES, "all"], default="methods", help="which methods to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (init and order)")
    parser.add_argument("--out", default="work_dirs/compare", help="folder of the runs and the report")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (they share the CPU threads)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="config overrides for every run")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                        help="train only these methods of the study (the report still covers all of it)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    parser.add_argument("--records", nargs="+", default=[], metavar="JSONL",
                        help="runs.jsonl files of runs made elsewhere, to include in the report")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.methods is not None:
        known = [m.name for m in selected_methods(args.study)]
        unknown = [name for name in args.methods if name not in known]
        if unknown:
            parser.error(f"--methods {' '.join(unknown)}: not in study {args.study!r}, whose methods are {known}")
    return args


def selected_methods(study: str) -> list[Method]:
    names = list(STUDIES) if study == "all" else [study]
    methods: dict[str, Method] = {}
    for name in names:
        for method in STUDIES[name]:
            methods.setdefault(method.name, method)
    return list(methods.values())


def planned_runs(methods: list[Method], seeds: list[int]) -> list[tuple[Method, int]]:
    return [(m, s) for m in methods for s in (seeds if m.all_seeds else seeds[:1])]


def run_dir(out: str, method: Method, seed: int) -> Path:
    return Path(out) / method.name / f"seed{seed}"


def train_command(method: Method, seed: int, work_dir: Path, opts: list[str]) -> list[str]:
    init = []
    if method.init_from is not None:
        init = [f"train.init_from={work_dir.parent.parent / method.init_from / f'seed{seed}' / 'last.pth'}"]
    return [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / method.config), *method.overrides, *init,
            *opts, f"train.seed={seed}", "--work-dir", str(work_dir), "--resume"]


def final_eval(work_dir: Path) -> dict | None:
    """The evaluation at the last epoch of a finished run, or None."""
    config = work_dir / "config.json"
    if not config.is_file() or not (work_dir / "metrics.jsonl").is_file():
        return None
    epochs = json.loads(config.read_text())["train"]["epochs"]
    finals = [r for r in read_metrics(str(work_dir))["val"].values() if r.get("epoch") == epochs]
    return finals[-1] if finals else None


def training_minutes(work_dir: Path) -> float:
    """Minutes spent in training steps (from the logged per-iteration times; resumes included)."""
    seconds, previous = 0.0, 0
    for iteration, record in sorted(read_metrics(str(work_dir))["train"].items()):
        seconds += (record.get("time") or 0.0) * (iteration - previous)
        previous = iteration
    return seconds / 60


def train(method: Method, seed: int, out: str, opts: list[str], threads: int) -> dict:
    """Train one run (or resume it) unless it has finished; returns its result.json."""
    work_dir = run_dir(out, method, seed)
    result_path = work_dir / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if result["opts"] != opts:
            raise RuntimeError(f"{work_dir} finished with --opts {result['opts']}, not {opts}: "
                               "use another --out (or delete that run)")
        return result
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = train_command(method, seed, work_dir, opts)
    say(f"{method.name} seed {seed}: training ({work_dir}/train.log)")
    with open(work_dir / "train.log", "a") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    evaluation = final_eval(work_dir)
    if code != 0 or evaluation is None:
        raise RuntimeError(f"{method.name} seed {seed} did not finish (exit code {code}); "
                           f"see {work_dir}/train.log, and rerun to resume it")
    minutes = training_minutes(work_dir)
    result = {"method": method.name, "seed": seed, "opts": opts, "command": command[1:], "minutes": round(minutes, 2),
              **{k: evaluation[k] for k in METRICS}, **provenance(work_dir)}
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    say(f"{method.name} seed {seed}: AP {100 * result['AP']:.1f} in {minutes:.1f} min")
    return result


def provenance(work_dir: Path) -> dict:
    """Where a run came from: the checkout, torch, threads and CPU kernels it ran with, and its first
    logged loss, which tells two runs of one seed that differ from the start (data, weights, code)
    from two that part later (float rounding grown by training)."""
    found = {}
    environment = work_dir / "environment.json"
    if environment.is_file():
        saved = json.loads(environment.read_text())
        found["environment"] = {k: saved.get(k) for k in RUN_ENVIRONMENT}
    logged = read_metrics(str(work_dir))["train"]
    if logged:
        first = min(logged)
        found["first_loss"] = {"iter": first, "loss": logged[first]["loss"]}
    return found


def say(line: str, stream=sys.stdout) -> None:
    """One whole line per write, so that the lines of concurrent runs do not interleave."""
    stream.write(f"[compare] {line}\n")
    stream.flush()


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std; NaN for a metric COCOeval could not compute (-1: no GT of that size) or
    a record does not hold."""
    if any(v < 0 or math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def read_records(paths: list[str]) -> dict[tuple[str, int], dict]:
    """The run records of ``runs.jsonl`` files, by (method, seed); a later file wins."""
    records = {}
    for path in paths:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise SystemExit(f"--records {path}: cannot read it ({error.strerror})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (str(record["method"]), int(record["seed"]))
                float(record["AP"])
            except (ValueError, KeyError, TypeError) as error:
                raise SystemExit(f"--records {path}, line {number}: not a run record with 'method', 'seed' and 'AP' "
                                 f"({error!r})") from None
            records[key] = record
    return records


def finished_runs(method: Method, out: str, records: dict[tuple[str, int], dict]) -> list[dict]:
    """The method's runs by seed: its run folders under ``out``, then the records of other seeds."""
    runs = {r["seed"]: r for r in (json.loads(p.read_text()) for p in (Path(out) / method.name).glob("seed*/result.json"))}
    for (name, seed), record in records.items():
        if name == method.name:
            runs.setdefault(seed, record)
    return [runs[seed] for seed in sorted(runs)]


def summarize(methods: list[Method], out: str, records: dict | None = None) -> dict:
    """Per method: its finished runs and mean/std of each metric in AP points (x100); a metric a
    record lacks is NaN for the method."""
    summary = {}
    for method in methods:
        runs = finished_runs(method, out, records or {})
        if not runs:
            continue
        stats = {k: mean_std([100 * r.get(k, math.nan) for r in runs]) for k in METRICS}
        summary[method.name] = {"label": point_label(method), "overrides": list(method.overrides), "config": method.config,
                                "seeds": [r["seed"] for r in runs], "minutes": [r.get("minutes") for r in runs],
                                "ap_per_seed": [100 * r["AP"] for r in runs],
                                "mean": {k: v[0] for k, v in stats.items()}, "std": {k: v[1] for k, v in stats.items()},
                                "runs": runs}
    return summary


def point_label(method: Method) -> str:
    """The method's label, with its place on the curve where it is one point of one (the points of
    a curve share the curve's label)."""
    if method.curve is None:
        return method.label
    return f"{method.label}, {AXES[method.axis][4].format(method.x)}"


def markdown_table(summary: dict) -> str:
    def cell(entry: dict, key: str) -> str:
        mean, std = entry["mean"][key], entry["std"][key]
        if math.isnan(mean):
            return "n/a"
        return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"

    lines = ["| method | seeds | " + " | ".join(METRICS) + " | AP per seed | training minutes |",
             "| --- " * (len(METRICS) + 4) + "|"]
    for entry in summary.values():
        known = [m for m in entry["minutes"] if m is not None]
        minutes = f"{statistics.median(known):.1f}" if known else "n/a"
        per_seed = ", ".join(f"{ap:.1f}" for ap in entry["ap_per_seed"])
        lines.append(f"| {entry['label']} | {len(entry['seeds'])} | "
                     + " | ".join(cell(entry, k) for k in METRICS) + f" | {per_seed} | {minutes} |")
    return "\n".join(lines) + "\n"


def plot_ap(summary: dict, path: Path) -> None:
    keys = METRICS[:3]
    width = 0.8 / len(summary)
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(keys) * max(1, len(summary)) / 3, 3.6))
    seeds_labelled = False
    for i, entry in enumerate(summary.values()):
        xs = [k + (i - (len(summary) - 1) / 2) * width for k in range(len(keys))]
        shown = [j for j, k in enumerate(keys) if not math.isnan(entry["mean"][k])]
        errors = [0 if math.isnan(entry["std"][keys[j]]) else entry["std"][keys[j]] for j in shown]
        ax.bar([xs[j] for j in shown], [entry["mean"][keys[j]] for j in shown], width, yerr=errors, capsize=3,
               label=f"{entry['label']} (n={len(entry['seeds'])})")
        if len(entry["ap_per_seed"]) > 1:  # each seed's AP: the spread behind the mean
            ax.plot([xs[0]] * len(entry["ap_per_seed"]), entry["ap_per_seed"], "o", markersize=3.5, color="black",
                    mfc="white", label=None if seeds_labelled else "AP of each seed")
            seeds_labelled = True
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel("COCO AP (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(summary: dict, out: str, path: Path) -> None:
    """Total training loss against iteration, averaged over the seeds whose run folder is here
    (a record holds no loss curve)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, entry in summary.items():
        folders = [Path(out) / name / f"seed{s}" for s in entry["seeds"]]
        curves = [read_metrics(str(f))["train"] for f in folders if (f / "metrics.jsonl").is_file()]
        if not curves:
            continue
        iterations = sorted(set.intersection(*(set(i for i, r in c.items() if r.get("loss") is not None)
                                                 for c in curves)))
        ax.plot(iterations, [statistics.fmean(c[i]["loss"] for c in curves) for i in iterations],
                label=f"{entry['label']} (n={len(curves)})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("total training loss (mean over seeds)")
    ax.set_yscale("log")
    ax.set_title("each method's own loss: compare shapes, not levels", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:  # none when every run is a record
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(methods: list[Method], summary: dict, axis: str, path: Path) -> None:
    """AP along ``axis``, one line per curve, seed std as error bars where there are seeds."""
    xlabel, _, log, reference, _ = AXES[axis]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    curves: dict[str, list[tuple[float, dict]]] = {}
    for method in methods:
        if method.curve and method.axis == axis and method.name in summary:
            curves.setdefault(method.curve, []).append((method.x, summary[method.name]))
    for label, points in curves.items():
        points.sort(key=lambda point: point[0])
        errors = [0 if math.isnan(e["std"]["AP"]) else e["std"]["AP"] for _, e in points]
        ax.errorbar([x for x, _ in points], [e["mean"]["AP"] for _, e in points], yerr=errors, marker="o",
                    capsize=3, label=label)
    ax.set_xlabel(xlabel)
    if log:
        ax.set_xscale("log")
    if reference is not None:
        ax.axvline(reference[0], color="grey", linestyle="--", label=reference[1])
    ax.set_ylabel("COCO AP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(methods: list[Method], out: str, records: dict | None = None) -> dict:
    summary = summarize(methods, out, records)
    if not summary:
        raise SystemExit(f"no finished runs under {out}" + (" nor in --records" if records else ""))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "runs.jsonl").write_text("".join(json.dumps(run) + "\n" for entry in summary.values()
                                                for run in entry["runs"]))
    table = markdown_table(summary)
    (out_dir / "results.md").write_text(table)
    plot_ap(summary, out_dir / "ap.png")
    plot_losses(summary, out, out_dir / "loss.png")
    written = ["results.json", "runs.jsonl", "results.md", "ap.png", "loss.png"]
    for axis in sorted({m.axis for m in methods if m.curve and m.name in summary}):
        plot_curves(methods, summary, axis, out_dir / AXES[axis][1])
        written.append(AXES[axis][1])
    print(table, end="")
    print(f"wrote {', '.join(f'{out_dir}/{name}' for name in written)}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)  # the trainings run from the repository root
    methods = selected_methods(args.study)
    records = read_records(args.records)
    if not args.report_only:
        runs = planned_runs([m for m in methods if args.methods is None or m.name in args.methods], args.seeds)
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        # runs that start from another run's weights go second, once those have finished
        for phase in ([r for r in runs if r[0].init_from is None], [r for r in runs if r[0].init_from is not None]):
            with ThreadPoolExecutor(args.jobs) as pool:
                futures = [pool.submit(train, m, s, args.out, args.opts, threads) for m, s in phase]
            failures = [f.exception() for f in futures if f.exception() is not None]
            for failure in failures:
                say(str(failure), sys.stderr)
            if failures:
                report(methods, args.out, records)
                return 1
    report(methods, args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
