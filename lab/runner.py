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
    python tools/compare.py --study patterns80_lr --seeds 0 --jobs 2  # FCOS's and DW's lr, each swept on val
    python tools/compare.py --study treecrowns --seeds 0 1 2 3 4 --jobs 2 --split test  # then on the test split
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
same method and seed). A record holds the run's metrics on val, its resolved config, command,
environment (revision, CPU, ISA, threads) and first loss; ``--split test`` adds the metrics of its
``last.pth`` on the benchmark's test split (once per run; choices are made on val, numbers are
reported on test) and reports those. The studies themselves are in tools/studies.py.

Beside the table, the report gives each method's **paired gap** to the baseline (``--baseline``,
by default the study's first method): over the seeds both ran (same seed: same data order and
same initial weights of the shared parts), the mean of the per-seed differences and its 95 %
confidence interval (Student's t); a "win" is an interval above 0, a "loss" one below.
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
from pathlib import Path

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tools.studies, when run as a script from a checkout

from dwdet.config import load_config  # noqa: E402
from dwdet.data import ensure_synthetic  # noqa: E402
from dwdet.engine.metrics import read_metrics  # noqa: E402
from tools.studies import AXES, STUDIES, Method  # noqa: E402

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# what of a run's environment.json its record keeps: what decides its arithmetic
RUN_ENVIRONMENT = ("git_revision", "git_dirty", "torch", "python", "threads", "cpu", "cpu_id", "cpu_capability",
                   "onednn_max_cpu_isa", "world_size")
# two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom (scipy is no dependency)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

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
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="the split the report gives: test evaluates every finished run's last.pth on the "
                             "benchmark's test split once (kept in its result.json)")
    parser.add_argument("--baseline", metavar="NAME", help="the method the paired gaps are taken against "
                                                           "(default: the study's first with runs)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    known = [m.name for m in selected_methods(args.study)]
    if args.baseline is not None and args.baseline not in known:
        parser.error(f"--baseline {args.baseline}: not in study {args.study!r}, whose methods are {known}")
    if args.methods is not None:
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
    """Every method's runs, seed by seed, so that a study stopped part-way leaves whole pairs."""
    return [(m, s) for s in seeds for m in methods if m.all_seeds or s == seeds[0]]


def run_dir(out: str, method: Method, seed: int) -> Path:
    return Path(out) / method.name / f"seed{seed}"


def train_command(method: Method, seed: int, work_dir: Path, opts: list[str]) -> list[str]:
    init = []
    if method.init_from is not None:
        init = [f"train.init_from={work_dir.parent.parent / method.init_from / f'seed{seed}' / 'last.pth'}"]
    return [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / method.config), "--opts", *method.overrides,
            *init, *opts, f"train.seed={seed}", "--work-dir", str(work_dir), "--resume"]


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
              **{k: evaluation[k] for k in METRICS}, **provenance(work_dir),
              "config": json.loads((work_dir / "config.json").read_text())}
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    say(f"{method.name} seed {seed}: AP {100 * result['AP']:.1f} in {minutes:.1f} min")
    return result


def split_overrides(method: Method, opts: list[str], split: str) -> list[str]:
    """Overrides that make tools/test.py evaluate on ``split`` of the method's benchmark: that split
    (generated first where the benchmark is synthetic) as the evaluation set."""
    data = load_config(str(REPO / method.config), [*method.overrides, *opts]).data
    if data.type == "synthetic":
        params = data.params.to_dict()
        if split == "test" and not params.get("num_test"):
            raise RuntimeError(f"{method.config}: data.params.num_test is 0, the benchmark has no test split")
        images, annotations = ensure_synthetic(REPO / data.root, seed=data.seed, **params)[split]
    else:
        keys = data.to_dict()
        if not keys.get(f"{split}_images") or not keys.get(f"{split}_ann"):
            raise RuntimeError(f"{method.config}: no data.{split}_images and data.{split}_ann, no {split} split")
        images, annotations = REPO / data.root / keys[f"{split}_images"], REPO / data.root / keys[f"{split}_ann"]
    return ["data.type=coco", f"data.val_images={images}", f"data.val_ann={annotations}"]


def evaluate_split(method: Method, seed: int, out: str, opts: list[str], threads: int, split: str) -> dict:
    """A finished run's metrics on ``split`` (its last.pth through tools/test.py), kept in its
    result.json under the split's name, so that each run is evaluated there once."""
    work_dir = run_dir(out, method, seed)
    result = json.loads((work_dir / "result.json").read_text())
    if split in result:
        return result
    command = [sys.executable, str(REPO / "tools" / "test.py"), str(work_dir / "config.json"),
               str(work_dir / "last.pth"), "--opts", *split_overrides(method, opts, split), "--work-dir", str(work_dir / split)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    say(f"{method.name} seed {seed}: evaluating on {split} ({work_dir}/{split}.log)")
    with open(work_dir / f"{split}.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    metrics = work_dir / split / "metrics_last.json"
    if code != 0 or not metrics.is_file():
        raise RuntimeError(f"{method.name} seed {seed}: the {split} evaluation failed (exit code {code}); "
                           f"see {work_dir}/{split}.log")
    evaluation = json.loads(metrics.read_text())
    result[split] = {**{k: evaluation[k] for k in METRICS}, "command": command[1:]}
    (work_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    say(f"{method.name} seed {seed}: {split} AP {100 * evaluation['AP']:.1f}")
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
    """The method's runs by seed: its run folders under ``out`` (None: records only), then the
    records of other seeds."""
    folders = (Path(out) / method.name).glob("seed*/result.json") if out is not None else ()
    runs = {r["seed"]: r for r in (json.loads(p.read_text()) for p in folders)}
    for (name, seed), record in records.items():
        if name == method.name:
            runs.setdefault(seed, record)
    return [runs[seed] for seed in sorted(runs)]


def metrics_on(run: dict, split: str) -> dict | None:
    """A run's metrics on ``split``: its record's own (val) or those of a later evaluation."""
    return run if split == "val" else run.get(split)


def summarize(methods: list[Method], out: str, records: dict | None = None, split: str = "val") -> dict:
    """Per method: its finished runs (those evaluated on ``split``) and mean/std of each metric in AP
    points (x100); a metric a record lacks is NaN for the method."""
    summary = {}
    for method in methods:
        runs = [r for r in finished_runs(method, out, records or {}) if metrics_on(r, split) is not None]
        if not runs:
            continue
        values = {k: [100 * metrics_on(r, split).get(k, math.nan) for r in runs] for k in METRICS}
        stats = {k: mean_std(v) for k, v in values.items()}
        summary[method.name] = {"label": point_label(method), "overrides": list(method.overrides), "config": method.config,
                                "curve": method.curve, "x": method.x, "split": split, "seeds": [r["seed"] for r in runs],
                                "minutes": [r.get("minutes") for r in runs], "ap_per_seed": values["AP"],
                                "values": values, "mean": {k: v[0] for k, v in stats.items()},
                                "std": {k: v[1] for k, v in stats.items()},
                                "transcribed": sum(bool(r.get("transcribed")) for r in runs), "runs": runs}
    return summary


def t975(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom: the table to 30,
    then the Cornish-Fisher series, within 1e-3 there."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def paired_gap(values: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """Mean of the per-seed differences ``values - baseline`` and its 95 % confidence interval (t
    distribution; NaN bounds with one pair)."""
    gaps = [a - b for a, b in zip(values, baseline, strict=True)]
    mean = statistics.fmean(gaps)
    if len(gaps) < 2:
        return mean, math.nan, math.nan
    half = t975(len(gaps) - 1) * statistics.stdev(gaps) / math.sqrt(len(gaps))
    return mean, mean - half, mean + half


def paired_gaps(summary: dict, baseline: str) -> dict:
    """Per method other than ``baseline``: the seeds both ran and the paired gap (mean, low, high)
    of each metric against it. Where the baseline is a point of a curve, a point of another curve
    is paired with the baseline curve's point at the same x (DW at 7 epochs with FCOS at 7)."""
    found = {}
    for name, entry in summary.items():
        base_name = baseline
        if summary[baseline]["curve"] is not None and entry["curve"] is not None:
            base_curve = summary[baseline]["curve"]
            base_name = next((n for n, e in summary.items() if e["curve"] == base_curve and e["x"] == entry["x"]
                              and entry["curve"] != base_curve), None)
        if base_name is None or name == base_name:
            continue
        base = summary[base_name]
        seeds = sorted(set(entry["seeds"]) & set(base["seeds"]))
        if not seeds:
            continue
        gaps = {}
        for k in METRICS:
            pairs = [(entry["values"][k][entry["seeds"].index(s)], base["values"][k][base["seeds"].index(s)])
                     for s in seeds]
            known = all(v >= 0 for pair in pairs for v in pair)  # NaN or COCOeval's -1 (no GT of that size): none
            gaps[k] = list(paired_gap(*zip(*pairs))) if known else None
        found[name] = {"baseline": base_name, "seeds": seeds, "gap": gaps}
    return found


def paired_table(summary: dict, gaps: dict) -> str:
    """Each method's paired gap to the baseline: mean [95 % CI] per metric, "win" where the interval
    is above 0 and "loss" where it is below."""
    def cell(gap: list | None) -> str:
        if gap is None:
            return "n/a"
        mean, low, high = gap
        if math.isnan(low):
            return f"{mean:+.1f}"
        verdict = " win" if low > 0 else " loss" if high < 0 else ""
        return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]{verdict}"

    lines = ["| paired gap (95 % CI) | seeds | " + " | ".join(METRICS) + " |", "| --- " * (len(METRICS) + 2) + "|"]
    for name, entry in gaps.items():
        lines.append(f"| {summary[name]['label']} − {summary[entry['baseline']]['label']} | {len(entry['seeds'])} | "
                     + " | ".join(cell(entry["gap"][k]) for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


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
        seeds = f"{len(entry['seeds'])}" + (f" ({entry['transcribed']} transcribed)" if entry["transcribed"] else "")
        lines.append(f"| {entry['label']} | {seeds} | "
                     + " | ".join(cell(entry, k) for k in METRICS) + f" | {per_seed} | {minutes} |")
    return "\n".join(lines) + "\n"


def tables(summary: dict, baseline: str | None = None) -> str:
    """The report's Markdown: the table of means, then the paired gaps to ``baseline`` (default: the
    first method), which also go into ``summary`` (its entries' "paired")."""
    gaps = paired_gaps(summary, baseline if baseline in summary else next(iter(summary)))
    for name, entry in gaps.items():
        summary[name]["paired"] = entry
    return markdown_table(summary) + ("\n" + paired_table(summary, gaps) if gaps else "")


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


def report(methods: list[Method], out: str, records: dict | None = None, split: str = "val",
           baseline: str | None = None) -> dict:
    """Write the report of ``split`` (results.json, results.md, or results_test.* for the test
    split, and the figures) and runs.jsonl; returns the summary."""
    summary = summarize(methods, out, records, split)
    if not summary:
        raise SystemExit(f"no finished runs evaluated on {split} under {out}" + (" nor in --records" if records else ""))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = tables(summary, baseline)
    stem = "results" if split == "val" else f"results_{split}"
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "runs.jsonl").write_text("".join(json.dumps(run) + "\n" for entry in summary.values()
                                                for run in entry["runs"]))
    (out_dir / f"{stem}.md").write_text(table)
    plot_ap(summary, out_dir / "ap.png")
    plot_losses(summary, out, out_dir / "loss.png")
    written = [f"{stem}.json", "runs.jsonl", f"{stem}.md", "ap.png", "loss.png"]
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
    code = 0
    if not args.report_only:
        runs = planned_runs([m for m in methods if args.methods is None or m.name in args.methods], args.seeds)
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        # runs that start from another run's weights go second, once those have finished; the
        # evaluation on the test split last, on every finished run
        phases = [(train, [r for r in runs if r[0].init_from is None]),
                  (train, [r for r in runs if r[0].init_from is not None])]
        if args.split != "val":
            phases.append((evaluate_split, runs))
        for step, phase in phases:
            extra = (args.split,) if step is evaluate_split else ()
            if step is evaluate_split:  # a run that did not finish has nothing to evaluate
                phase = [(m, s) for m, s in phase if (run_dir(args.out, m, s) / "result.json").is_file()]
            with ThreadPoolExecutor(args.jobs) as pool:
                futures = [pool.submit(step, m, s, args.out, args.opts, threads, *extra) for m, s in phase]
            failures = [f.exception() for f in futures if f.exception() is not None]
            for failure in failures:
                say(str(failure), sys.stderr)
            if failures:
                code = 1
                break
    report(methods, args.out, records, args.split, args.baseline)
    return code


if __name__ == "__main__":
    sys.exit(main())
