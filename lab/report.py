"""The comparison's report: per method the mean and sample std over seeds of each COCO metric, the
paired gaps to a baseline, the Markdown tables and the figures.

Beside the table, the report gives each method's **paired gap** to the baseline (by default the
study's first method): over the seeds both ran (same seed: same data order and same initial
weights of the shared parts), the mean of the per-seed differences and its 95 % confidence interval
(Student's t); a "win" is an interval above 0, a "loss" one below. The runs are read from their
folders (lab/runner.py writes them) and from run records (``runs.jsonl``); a run folder wins over a
record of the same method and seed.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from dwdet.engine.metrics import read_metrics  # noqa: E402
from lab.runner import METRICS  # noqa: E402
from lab.studies import AXES, Method  # noqa: E402

# two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom (scipy is no dependency)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std; NaN for a metric COCOeval could not compute (-1: no GT of that size) or
    a record does not hold."""
    if any(v < 0 or math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


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


def machine(run: dict) -> str | None:
    """The CPU type a run was trained on (its model name and the ISA torch's kernels used), None
    where unrecorded: the kernels differ between ISAs, so the protocol pairs runs of one type."""
    env = run.get("environment") or {}
    return f"{env['cpu']}, {env.get('cpu_capability')}" if env.get("cpu") else None


def paired_gaps(summary: dict, baseline: str) -> dict:
    """Per method other than ``baseline``: the seeds both ran and the paired gap (mean, low, high)
    of each metric against it, and the CPU types that trained those pairs (more than one breaks
    the protocol). Where the baseline is a point of a curve, a point of another curve is paired
    with the baseline curve's point at the same x (DW at 7 epochs with FCOS at 7)."""
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
        runs = [e["runs"][e["seeds"].index(s)] for s in seeds for e in (entry, base)]
        machines = sorted({m for m in map(machine, runs) if m is not None})
        found[name] = {"baseline": base_name, "seeds": seeds, "gap": gaps, "machines": machines}
    return found


def gap_cell(gap: list | None, mark: str = "", verdicts: tuple[str, str] = ("win", "loss")) -> str:
    """A paired gap as "mean [low, high]", with "win" where the interval is above 0 and "loss" where
    it is below (each wrapped in ``mark``, e.g. "**"; ``verdicts`` words them for a measure where
    more is not better)."""
    if gap is None:
        return "n/a"
    mean, low, high = gap
    if math.isnan(low):
        return f"{mean:+.1f}"
    above, below = verdicts
    verdict = f" {mark}{above}{mark}" if low > 0 else f" {mark}{below}{mark}" if high < 0 else ""
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]{verdict}"


def paired_table(summary: dict, gaps: dict) -> str:
    """Each method's paired gap to the baseline: mean [95 % CI] per metric (:func:`gap_cell`)."""
    lines = ["| paired gap (95 % CI) | seeds | " + " | ".join(METRICS) + " |", "| --- " * (len(METRICS) + 2) + "|"]
    for name, entry in gaps.items():
        seeds = seeds_cell(len(entry["seeds"]), entry["machines"])
        lines.append(f"| {summary[name]['label']} − {summary[entry['baseline']]['label']} | {seeds} | "
                     + " | ".join(gap_cell(entry["gap"][k]) for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


def seeds_cell(seeds: int, machines: set[str] | list[str]) -> str:
    """A count of paired seeds, and how many CPU types trained them where that is more than one."""
    return f"{seeds}" + (f" ({len(machines)} CPU types)" if len(machines) > 1 else "")


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
