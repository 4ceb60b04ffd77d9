"""The one-page summary (Markdown, on stdout) of a tools/gpu_check.sh output folder, and the two
merges the check does on the way.

    python tools/gpu_check_summary.py OUT_DIR [--dry-run] > OUT_DIR/summary.md
    python tools/gpu_check_summary.py --merge-junit OUT.xml IN.xml... [--no-skips]
    python tools/gpu_check_summary.py --merge-train OUT.jsonl NAME=RUN_DIR...

The summary reads what the steps left in OUT_DIR (steps.json, env.txt, pytest.xml, log.txt,
bench_ops.json, bench_train.json, train_metrics.jsonl); a missing file is reported as missing. It
judges the GPU targets of docs/benchmarks.md. --merge-junit joins the per-file test reports into one
and, with --no-skips (on the GPU), fails when no test ran, a test failed, or a test was skipped for
another reason than the machine's single GPU. --merge-train joins the runs' metrics.jsonl into one
file, each record tagged with its run, with the AP of a checkpoint evaluated after a deadline.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_SKIPS = ("needs two GPUs",)  # the GPU machine has one
SANITIZERS = ("memcheck", "racecheck", "synccheck")


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def revision() -> str:
    """The checkout's commit: from git where there is one, else from .whl/revision.txt, which
    `make gpu-wheels` writes for the GPU machine (a copy of the tree without git)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except OSError:  # no git on this machine
        pass
    try:
        return (ROOT / ".whl" / "revision.txt").read_text().strip() + " (from .whl/revision.txt)"
    except OSError:
        return "unknown"


# ---- merges ----------------------------------------------------------------------------------------

def merge_junit(out: Path, inputs: List[Path], no_skips: bool) -> List[str]:
    """Join pytest's junit files into one <testsuites>; return the problems (empty when all is well)."""
    merged, problems, total = ET.Element("testsuites"), [], 0
    for path in inputs:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as err:
            problems.append(f"{path.name}: unreadable ({err})")
            continue
        for suite in ([root] if root.tag == "testsuite" else root.findall("testsuite")):
            suite.set("name", path.stem)
            merged.append(suite)
            for case in suite.iter("testcase"):
                total += 1
                name = f"{case.get('classname')}::{case.get('name')}"
                if case.find("failure") is not None or case.find("error") is not None:
                    problems.append(f"failed: {name}")
                skip = case.find("skipped")
                if no_skips and skip is not None and not any(r in (skip.get("message") or "") for r in ALLOWED_SKIPS):
                    problems.append(f"skipped on the GPU: {name} ({skip.get('message')})")
    ET.ElementTree(merged).write(out, encoding="unicode")
    if total == 0:
        problems.append("no test ran")
    return problems


def merge_train(out: Path, runs: List[str]) -> None:
    """NAME=RUN_DIR...: each run's metrics.jsonl records tagged {"run": NAME}; a run without a
    validation record (stopped by its deadline) gets one from the metrics_last.json of its last.pth."""
    with open(out, "w") as f:
        for spec in runs:
            name, _, run_dir = spec.partition("=")
            path = Path(run_dir) / "metrics.jsonl"
            records = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
            if not any(r.get("type") == "val" for r in records):
                last = _load(Path(run_dir) / "metrics_last.json")
                if last:
                    iters = max((r.get("iter", 0) for r in records if r.get("type") == "train"), default=0)
                    records.append({"type": "val", "iter": iters, "stopped_early": True,
                                    **{k: v for k, v in last.items() if k != "checkpoint"}})
            for record in records:
                f.write(json.dumps({"run": name, **record}) + "\n")


# ---- sections ----------------------------------------------------------------------------------------

def steps_table(steps: list) -> List[str]:
    lines = ["| step | result | seconds (limit) |", "| --- | --- | --- |"]
    for s in steps:
        result = ("skipped (time budget)" if s["skipped"] else "timed out" if s["timed_out"]
                  else "ok" if s["rc"] == 0 else f"failed (exit {s['rc']})")
        lines.append(f"| {s['step']} | {result} | {s['seconds']:.0f} ({s.get('limit', '?')}) |")
    return lines


def tests_section(out: Path) -> List[str]:
    try:
        root = ET.parse(out / "pytest.xml").getroot()
    except (OSError, ET.ParseError):
        return ["CUDA tests: no pytest.xml."]
    counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    lines, poisoned, skips = [], None, Counter()
    for suite in ([root] if root.tag == "testsuite" else root.findall("testsuite")):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                text = (bad.get("message") or "") + (bad.text or "")
                if poisoned is None and "device-side assert" in text:
                    poisoned = name
                lines.append(f"- failed: `{name}`")
            elif case.find("skipped") is not None:
                skips[case.find("skipped").get("message")] += 1
    head = [f"CUDA tests: {counts['tests']} run, {counts['failures']} failed, {counts['errors']} errors, "
            f"{counts['skipped']} skipped (each test file in its own process)."]
    head += [f"- skipped: {n} x {reason}" for reason, n in skips.items()]
    if poisoned:
        head.append(f"A device-side assert in `{poisoned}` leaves its process's CUDA context unusable: the "
                    f"failures after it in the same file may be its consequence.")
    return head + lines


def sanitizer_section(log: str) -> List[str]:
    """Each tool's verdict from its block in log.txt ("----- sanitizer TOOL: exit N" + its output)."""
    lines = []
    for tool in SANITIZERS:
        block = re.search(rf"----- sanitizer {tool}: exit (\d+)\n(.*?)(?=\n----- |\n===== |\Z)", log, re.S)
        if not block:
            lines.append(f"- {tool}: did not run")
            continue
        code, text = int(block.group(1)), block.group(2)
        summary = re.findall(r"ERROR SUMMARY: .*", text)
        if "Device not supported" in text:
            verdict = "compute-sanitizer does not support this device (no verdict)"
        elif summary:
            verdict = summary[-1] + ("" if code == 0 else f" (exit {code})")
        else:
            verdict = f"no ERROR SUMMARY line, exit {code} (see log.txt)"
        lines.append(f"- {tool}: {verdict}")
    return lines


def _row(rows: list, case: str, mode: str, gts: Optional[int] = None) -> Optional[dict]:
    return next((r for r in rows if r["case"] == case and r["mode"] == mode and (gts is None or r["gts"] == gts)),
                None)


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def bench_ops_section(bench: Optional[dict]) -> List[str]:
    if not bench:
        return ["Operators: no bench_ops.json."]
    lines = [f"Operators on {bench['device']} (median ms; ratio to fused; peak extra MiB of fwd+bwd; host "
             f"syncs and kernel launches of one fused call):", "",
             "| case | G | mode | fused ms | others | peak MiB | syncs | launches |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in bench["rows"]:
        fused = r["ms"]["fused"]
        others = ", ".join(f"{k} {v:.2f} ({v / fused:.1f}x)" for k, v in r["ms"].items() if k != "fused")
        peak = ", ".join(f"{k} {v:.0f}" for k, v in r.get("peak_extra_mib", {}).items())
        lines.append(f"| {r['case']} | {r['gts'] or '-'} | {r['mode']} | {fused:.3f} | {others or '-'} | "
                     f"{peak or '-'} | {_or_dash(r.get('syncs'))} | {_or_dash(r.get('launches'))} |")
    return lines


def peer_section(bench: Optional[dict]) -> List[str]:
    peer = (bench or {}).get("peer")
    if not peer:
        return ["Assigner peer: not measured."]
    if peer.get("skipped"):
        return [f"Assigner peer: skipped ({peer['skipped']})."]
    lines = [f"Task-aligned assignment against Ultralytics' TaskAlignedAssigner (topk 13, alpha 1, beta 6), "
             f"P = 22,400, batch 2, 80 classes, on {bench['device']}:", "",
             "| G | assigner | ms | peak MiB | positives |", "| --- | --- | --- | --- | --- |"]
    for r in peer["rows"]:
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "-"
        lines.append(f"| {r['gts']} | {r['impl']} | {r['ms']:.2f} | {peak} | {r['positives']} |")
    return lines


def targets_section(bench: Optional[dict], train_bench: Optional[dict]) -> List[str]:
    lines = []
    rows = bench["rows"] if bench else []
    assign = _row(rows, "assign", "fwd+bwd")
    if assign:
        ratio = assign["ms"]["dense reference"] / assign["ms"]["fused"]
        limits = ", ".join(f"{assign[k]} {k}" for k in ("syncs", "launches") if assign.get(k) is not None)
        lines.append(f"- assignment fwd+bwd vs its dense reference (G = {assign['gts']}): {ratio:.1f}x "
                     f"(the >= 10x target was set on a CPU; reported, not judged, on a GPU"
                     f"{'; one fused call: ' + limits if limits else ''})")
    crowded = _row(rows, "crowded", "fwd+bwd")
    if crowded:
        ms, peak = crowded["ms"]["fused"], crowded.get("peak_extra_mib", {}).get("fused")
        lines.append(f"- crowded scene (G = {crowded['gts']}, 80 classes, batch 2) fwd+bwd: {ms:.2f} ms "
                     f"(target <= 10 ms): {'met' if ms <= 10 else 'not met'}; peak extra memory "
                     f"{'%.0f MiB' % peak if peak is not None else 'not measured'}")
    peer = [r for r in (bench or {}).get("peer", {}).get("rows", [])]
    ratios = {r["gts"]: r["ms"] for r in peer if r["impl"].startswith("ultralytics")}
    for r in peer:
        if r["impl"] == "ours (tood)" and r["gts"] in ratios:
            ratios[r["gts"]] /= r["ms"]
    if ratios:
        lines.append("- task-aligned assignment, ours against Ultralytics' (goal: faster at every G): "
                     + ", ".join(f"{v:.1f}x at G = {g}" for g, v in ratios.items())
                     + f": {'met' if all(v > 1 for v in ratios.values()) else 'not met'}")
    spread = (train_bench or {}).get("ratio_spread", {}).get("dw / fcos")
    ratio = (train_bench or {}).get("ratios", {}).get("dw / fcos")
    if ratio is not None:
        line = (f"- DW's training step over FCOS's (R-50, 800 x 1333, batch 2): {100 * (ratio - 1):+.1f} % "
                f"(target <= +5 %): ")
        if not spread or spread["rounds"] < 20:
            line += f"no verdict from {spread['rounds'] if spread else 'an unknown number of'} steps (< 20)"
        else:
            q1, q3 = spread["q1"], spread["q3"]
            line += f"{'met' if ratio <= 1.05 else 'not met'}; per-step ratios {100 * (q1 - 1):+.1f} .. " \
                    f"{100 * (q3 - 1):+.1f} % (quartiles of {spread['rounds']} steps)"
            if q1 <= 1.05 < q3:
                line += ", which straddle the target"
        lines.append(line)
    return lines or ["- no benchmark results"]


def bench_train_section(bench: Optional[dict]) -> List[str]:
    if not bench:
        return ["Training step: no bench_train.json."]
    lines = [f"Training step on {bench['device']}:"]
    for name, r in bench["results"].items():
        peak = f", peak {r['peak_mib']:.0f} MiB" if "peak_mib" in r else ""
        times = sorted(r["times_s"])
        lines.append(f"- {name}: {1000 * r['median_s']:.1f} ms (median of {len(times)}; "
                     f"{1000 * times[0]:.1f} .. {1000 * times[-1]:.1f}){peak}")
    lines += [f"- {k}: {v:.3f}" for k, v in bench.get("ratios", {}).items()]
    return lines


def train_section(out: Path) -> List[str]:
    try:
        records = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError):
        return ["Training: no train_metrics.jsonl."]
    lines = ["patterns80 with AdamW (configs/lab/{fcos,dw}_r10_patterns80_adamw.py, seed 0, 1750 iterations in full; "
             "both runs side by side on the one GPU):", "",
             "| run | iterations | s/iter (median) | AP | AP50 | peak MB |", "| --- | --- | --- | --- | --- | --- |"]
    for run in dict.fromkeys(r.get("run", "?") for r in records):
        train = [r for r in records if r.get("run", "?") == run and r.get("type") == "train"]
        val = [r for r in records if r.get("run", "?") == run and r.get("type") == "val"]
        iters = train[-1]["iter"] if train else 0
        s_iter = statistics.median(r["time"] for r in train) if train else float("nan")
        ap = val[-1].get("AP") if val else None
        ap50 = val[-1].get("AP50") if val else None
        note = " (stopped by the time budget)" if val and val[-1].get("stopped_early") else ""
        fmt = lambda v: f"{100 * v:.1f}" if isinstance(v, float) else "-"  # noqa: E731
        lines.append(f"| {run} | {iters}{note} | {s_iter:.4f} | {fmt(ap)} | {fmt(ap50)} | "
                     f"{train[-1].get('memory_mb', '-') if train else '-'} |")
    return lines


def summary(out: Path, dry_run: bool) -> List[str]:
    steps = _load(out / "steps.json") or []
    title = "GPU check (dry run on the CPU)" if dry_run else "GPU check"
    env = (out / "env.txt").read_text().strip().splitlines() if (out / "env.txt").exists() else ["no env.txt"]
    lines = [f"# {title}", "", f"Revision {revision()}.", "", "```", *env, "```", ""] + steps_table(steps)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    bench, train_bench = _load(out / "bench_ops.json"), _load(out / "bench_train.json")
    if not dry_run:
        lines += ["", "## Targets", ""] + targets_section(bench, train_bench)
    lines += ["", "## Tests and sanitizers", ""] + tests_section(out) + [""] + sanitizer_section(log)
    lines += ["", "## Benchmarks", ""] + bench_ops_section(bench) + [""] + peer_section(bench)
    lines += [""] + bench_train_section(train_bench)
    lines += ["", "## Training", ""] + train_section(out)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="OUT_DIR; or with a merge, its output and inputs")
    parser.add_argument("--dry-run", action="store_true", help="the summary of a dry run (no targets)")
    parser.add_argument("--merge-junit", action="store_true", help="join junit files: OUT.xml IN.xml...")
    parser.add_argument("--no-skips", action="store_true", help="with --merge-junit: a skip is a failure")
    parser.add_argument("--merge-train", action="store_true", help="join runs' metrics: OUT.jsonl NAME=DIR...")
    args = parser.parse_args(argv)
    if args.merge_junit:
        problems = merge_junit(Path(args.paths[0]), [Path(p) for p in args.paths[1:]], args.no_skips)
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    if args.merge_train:
        merge_train(Path(args.paths[0]), args.paths[1:])
        return 0
    print("\n".join(summary(Path(args.paths[0]), args.dry_run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
