"""The one-page summary (Markdown, on stdout) of a tools/gpu_check.sh output folder.

    python tools/gpu_check_summary.py OUT_DIR [--dry-run] > OUT_DIR/summary.md

It reads what the steps left there (steps.json, pytest.xml, log.txt, bench_ops.json,
bench_train.json, train_metrics.jsonl); a missing file is reported as missing. The targets checked
are the GPU performance targets of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _revision() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def steps_table(steps: list) -> List[str]:
    lines = ["| step | result | seconds |", "| --- | --- | --- |"]
    for s in steps:
        result = ("skipped (time budget)" if s["skipped"] else "timed out" if s["timed_out"]
                  else "ok" if s["rc"] == 0 else f"failed (exit {s['rc']})")
        lines.append(f"| {s['step']} | {result} | {s['seconds']:.0f} |")
    return lines


def tests_section(out: Path) -> List[str]:
    try:
        root = ET.parse(out / "pytest.xml").getroot()
    except (OSError, ET.ParseError):
        return ["CUDA tests: no pytest.xml."]
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    lines = [f"CUDA tests: {counts['tests']} run, {counts['failures']} failed, {counts['errors']} errors, "
             f"{counts['skipped']} skipped."]
    for case in suite.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            lines.append(f"- failed: `{case.get('classname')}::{case.get('name')}`")
    return lines


def sanitizer_section(log: str) -> List[str]:
    lines = []
    for tool in ("memcheck", "racecheck", "synccheck"):
        block = re.search(rf"===== {tool} .*?(?=\n===== |\Z)", log, re.S)
        summary = re.findall(r"ERROR SUMMARY: .*", block.group(0)) if block else []
        lines.append(f"- {tool}: {summary[-1] if summary else 'no ERROR SUMMARY line (see log.txt)'}")
    return lines


def _row(rows: list, case: str, mode: str, gts: Optional[int] = None) -> Optional[dict]:
    return next((r for r in rows if r["case"] == case and r["mode"] == mode and (gts is None or r["gts"] == gts)),
                None)


def bench_ops_section(bench: Optional[dict]) -> List[str]:
    if not bench:
        return ["Operators: no bench_ops.json."]
    lines = [f"Operators on {bench['device']} (median ms; dense/fused ratio; peak extra MiB of fwd+bwd):", "",
             "| case | G | mode | fused ms | others | peak MiB |", "| --- | --- | --- | --- | --- | --- |"]
    for r in bench["rows"]:
        fused = r["ms"]["fused"]
        others = ", ".join(f"{k} {v:.2f} ({v / fused:.1f}x)" for k, v in r["ms"].items() if k != "fused")
        peak = ", ".join(f"{k} {v:.0f}" for k, v in r.get("peak_extra_mib", {}).items())
        lines.append(f"| {r['case']} | {r['gts'] or '-'} | {r['mode']} | {fused:.3f} | {others or '-'} | {peak or '-'} |")
    return lines


def targets_section(bench: Optional[dict], train_bench: Optional[dict]) -> List[str]:
    lines = []
    rows = bench["rows"] if bench else []
    assign = _row(rows, "assign", "fwd+bwd")
    if assign:
        ratio = assign["ms"]["dense reference"] / assign["ms"]["fused"]
        lines.append(f"- assignment fwd+bwd vs its dense reference (G = {assign['gts']}): {ratio:.1f}x "
                     f"(target >= 10x): {'met' if ratio >= 10 else 'not met'}")
    crowded = _row(rows, "crowded", "fwd+bwd")
    if crowded:
        ms, peak = crowded["ms"]["fused"], crowded.get("peak_extra_mib", {}).get("fused")
        lines.append(f"- crowded scene (G = {crowded['gts']}, 80 classes, batch 2) fwd+bwd: {ms:.2f} ms "
                     f"(target <= 10 ms): {'met' if ms <= 10 else 'not met'}; peak extra memory "
                     f"{'%.0f MiB' % peak if peak is not None else 'not measured'}")
    ratio = (train_bench or {}).get("ratios", {}).get("dw / fcos")
    if ratio is not None:
        lines.append(f"- DW's training step over FCOS's (R-50, 800 x 1333, batch 2): {100 * (ratio - 1):+.1f} % "
                     f"(target <= +5 %): {'met' if ratio <= 1.05 else 'not met'}")
    return lines or ["- no benchmark results"]


def bench_train_section(bench: Optional[dict]) -> List[str]:
    if not bench:
        return ["Training step: no bench_train.json."]
    lines = [f"Training step on {bench['device']}:"]
    for name, r in bench["results"].items():
        peak = f", peak {r['peak_mib']:.0f} MiB" if "peak_mib" in r else ""
        lines.append(f"- {name}: {1000 * r['median_s']:.1f} ms (median of {len(r['times_s'])}){peak}")
    lines += [f"- {k}: {v:.3f}" for k, v in bench.get("ratios", {}).items()]
    return lines


def train_section(out: Path) -> List[str]:
    try:
        records = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines() if line]
    except (OSError, ValueError):
        return ["Training run: no train_metrics.jsonl."]
    train = [r for r in records if r.get("type") == "train"]
    val = [r for r in records if r.get("type") == "val"]
    lines = []
    if train:
        last = train[-1]
        lines.append(f"Training run: {last['iter']} iterations, last loss {last.get('loss', float('nan')):.4f}, "
                     f"{last.get('time', float('nan')):.3f} s/iter, peak {last.get('memory_mb', '?')} MB.")
    if val:
        metrics = {k: v for k, v in val[-1].items() if "AP" in k}
        lines.append("Validation: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    return lines or ["Training run: no records."]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    steps = _load(out / "steps.json") or []
    title = "GPU check (dry run on the CPU)" if args.dry_run else "GPU check"
    lines = [f"# {title}", "", f"Revision {_revision()}.", ""] + steps_table(steps)
    if not args.dry_run:
        log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
        bench, train_bench = _load(out / "bench_ops.json"), _load(out / "bench_train.json")
        lines += ["", "## Targets", ""] + targets_section(bench, train_bench)
        lines += ["", "## Tests and sanitizers", ""] + tests_section(out) + [""] + sanitizer_section(log)
        lines += ["", "## Benchmarks", ""] + bench_ops_section(bench) + [""] + bench_train_section(train_bench)
        lines += ["", "## Short training run", ""] + train_section(out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
