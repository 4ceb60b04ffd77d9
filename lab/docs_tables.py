"""The docs' result tables, made from their run records: every table between
``<!-- compare: ARGS -->`` and ``<!-- /compare -->`` in a Markdown file is the report that
``python -m lab.compare ARGS --report-only`` gives from the records that ARGS names (``--records``; the
table of means, then the paired gaps), and nothing else.

    python -m lab.docs_tables docs/studies/*.md                # rewrite the tables from their records
    python -m lab.docs_tables --check docs/studies/*.md README.md  # exit 1 naming each table that differs

A table of gaps across benchmarks, one row per comparison, is generated the same way from a
``<!-- gaps: BASELINE | METHOD [| OTHER ...] -->`` block (the columns' titles) whose rows are
``<!-- row: LABEL | ARGS -->`` lines (ARGS naming the baseline, the method and each other column's
method with ``--methods``, ``-`` where a row has none): each row gives the baseline's and the
method's AP and the method's paired gap at AP, AP50 and AP75 with its 95 % interval, each other
column the method's label, AP and paired gap at AP; "win" or "loss" only where the interval
excludes 0.

A ``<!-- rank-oracle: RECORD | BASELINE=FOLDER | METHOD=FOLDER -->`` block is the table of a
``tools/rank_oracle.py --json`` record: each of its rankings at AP and at three IoU thresholds, the
two methods' means over the seeds they share (run folders ``.../FOLDER/seedN``; FOLDER may hold
several path parts) and the paired gap. ``FOLDER@RANKING`` holds a column to one ranking (e.g.
``DW=p80a_dw_ema@model | DW, cls×obj^3=p80a_dw_ema@cls×obj^3``: one setting against another).

A ``<!-- tide: RECORD | BASELINE=FOLDER | METHOD=FOLDER -->`` block is the table of a
``tools/tide_errors.py --json`` record: AP50 by COCO's evaluation and by TIDE's, and the AP50 each of
TIDE's errors would add if fixed, for both methods over the seeds they share, with the paired gap
(rows that are 0 for every run, such as the class errors of one class, are left out).

A figure elsewhere in a page ("37.8 ± 1.0") can be checked against the tables with
``figures_without_table``: tests/lab/test_docs_tables.py does so for the README.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import Callable

from dwdet.engine.evaluation import PER_IOU
from lab import compare, report, runner

REPO = Path(__file__).resolve().parents[1]

BLOCK = re.compile(r"(?P<head><!-- compare: (?P<args>[^\n]*?) -->\n)(?P<table>.*?)(?P<tail><!-- /compare -->)", re.S)
GAPS = re.compile(r"(?P<head><!-- gaps: (?P<titles>[^\n]*?) -->\n(?P<rows>(?:<!-- row: [^\n]*? -->\n)+))(?P<table>.*?)(?P<tail><!-- /gaps -->)",
                  re.S)
ORACLE = re.compile(r"(?P<head><!-- rank-oracle: (?P<args>[^\n]*?) -->\n)(?P<table>.*?)(?P<tail><!-- /rank-oracle -->)", re.S)
TIDE = re.compile(r"(?P<head><!-- tide: (?P<args>[^\n]*?) -->\n)(?P<table>.*?)(?P<tail><!-- /tide -->)", re.S)
ORACLE_THRESHOLDS = (("0.50:0.95", None), ("0.50", "0.50"), ("0.75", "0.75"), ("0.90", "0.90"))
ROW = re.compile(r"<!-- row: (?P<label>[^|\n]*?) \| (?P<args>[^\n]*?) -->")
FIGURE = re.compile(r"(\d+\.\d) ± (\d+\.\d)")
GAP_METRICS = ("AP", "AP50", "AP75")


def generate(args_text: str) -> str:
    """The Markdown that ``python -m lab.compare ARGS`` reports from the records named in ARGS."""
    args = compare.parse_args(shlex.split(args_text))
    if not args.records:
        raise ValueError(f"<!-- compare: {args_text} -->: a docs table needs --records (run folders are not kept)")
    methods = [m for m in runner.selected_methods(args.study) if args.methods is None or m.name in args.methods]
    records = runner.read_records([str(REPO / path) for path in args.records])
    summary = report.summarize(methods, None, records, args.split)
    if not summary:
        raise ValueError(f"<!-- compare: {args_text} -->: none of its methods has a record")
    return report.tables(summary, args.baseline)


def gap_row(label: str, args_text: str, columns: int = 2) -> str:
    """One row of a gaps table: the methods of ARGS (``--methods BASELINE METHOD [OTHER ...]``, one
    per column, ``-`` where a benchmark has none) on its split. BASELINE and METHOD get their AP and
    METHOD its paired gap at AP, AP50 and AP75; each OTHER a cell of its label, AP and paired gap at AP."""
    tokens = shlex.split(args_text)
    args = compare.parse_args([token for token in tokens if token != "-"])  # "-": no method in that column
    if args.methods is not None:
        start = tokens.index("--methods") + 1
        args.methods = tokens[start:next((i for i in range(start, len(tokens)) if tokens[i].startswith("--")),
                                         len(tokens))]
    if not args.records or not args.methods or len(args.methods) != columns or "-" in args.methods[:2]:
        raise ValueError(f"<!-- row: {label} | {args_text} -->: a row needs --records and --methods BASELINE METHOD"
                         + " OTHER" * (columns - 2) + " (an OTHER may be -)")
    by_name = {m.name: m for m in runner.selected_methods(args.study)}
    records = runner.read_records([str(REPO / path) for path in args.records])
    named = [name for name in args.methods if name != "-"]
    summary = report.summarize([by_name[name] for name in named], None, records, args.split)
    base, main, *others = args.methods
    if set(summary) != set(named):
        raise ValueError(f"<!-- row: {label} | {args_text} -->: no {args.split} records of "
                         f"{sorted(set(named) - set(summary))}")
    gaps = report.paired_gaps(summary, base)

    def ap(name: str) -> str:
        mean, std = summary[name]["mean"]["AP"], summary[name]["std"]["AP"]
        return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"

    seeds = len(gaps[main]["seeds"])
    machines = {m for name in (main, *others) if name != "-" for m in gaps[name]["machines"]}

    def other_cell(name: str) -> str:
        if name == "-":
            return "—"
        count = len(gaps[name]["seeds"])
        return (f"{by_name[name].label}: {ap(name)}, {report.gap_cell(gaps[name]['gap']['AP'], '**')}"
                + ("" if count == seeds else f" ({count} seeds)"))

    return (f"| {label} | {args.split} | {report.seeds_cell(seeds, machines)} | {ap(base)} | {ap(main)} | "
            + " | ".join(report.gap_cell(gaps[main]["gap"][k], "**") for k in GAP_METRICS)
            + "".join(f" | {other_cell(name)}" for name in others) + " |\n")


def generate_gaps(titles: str, rows: str) -> str:
    """The gaps table of a block: its columns' titles (``BASELINE | METHOD [| OTHER ...]``) and its row lines."""
    base, main, *others = (t.strip() for t in titles.split("|"))
    header = (f"| benchmark | split | paired seeds | {base} AP | {main} AP | "
              + " | ".join(f"gap {k} [95 % CI]" for k in GAP_METRICS)
              + "".join(f" | {other} (AP, gap AP [95 % CI])" for other in others) + " |\n")
    return header + "| --- " * (5 + len(GAP_METRICS) + len(others)) + "|\n" + "".join(
        gap_row(m["label"].strip(), m["args"], 2 + len(others)) for m in ROW.finditer(rows))


def generate_rank_oracle(args_text: str) -> str:
    """The table of a rank-oracle block (see the module's docstring)."""
    path, record, (base_title, base), (title, method) = _record_block("rank-oracle", args_text)
    (base, base_ranking), (method, method_ranking) = (_folder_and_ranking(c) for c in (base, method))
    runs, seeds = _paired_runs(record["metrics"], base, method, f"<!-- rank-oracle: {args_text} -->: ", path)
    rankings = list(runs[(base, seeds[0])])
    for fixed in (base_ranking, method_ranking):
        if fixed is not None and fixed not in rankings:
            raise ValueError(f"<!-- rank-oracle: {args_text} -->: no ranking {fixed!r} in {path} (it has {rankings})")
    if base_ranking is not None and method_ranking is not None:
        rankings = [f"{base_ranking} / {method_ranking}"]
    lines = [f"| ranking | IoU threshold | {base_title} | {title} | {_gap_title(seeds)} |",
             "| --- | --- | --- | --- | --- |"]
    for row_ranking in rankings:
        for label, threshold in ORACLE_THRESHOLDS:
            def values(folder: str, ranking: str) -> list[float]:
                stats = [runs[(folder, seed)][ranking] for seed in seeds]
                return [100 * (s["AP"] if threshold is None else s[PER_IOU][threshold]) for s in stats]
            lines.append(_paired_row(f"{row_ranking} | {label}", values(base, base_ranking or row_ranking),
                                     values(method, method_ranking or row_ranking)))
    return "\n".join(lines) + "\n"


def generate_tide(args_text: str) -> str:
    """The table of a tide block (see the module's docstring)."""
    path, record, (base_title, base), (title, method) = _record_block("tide", args_text)
    runs, seeds = _paired_runs(record["errors"], base, method, f"<!-- tide: {args_text} -->: ", path)
    lines = [f"| AP50 | {base_title} | {title} | {_gap_title(seeds)} |", "| --- | --- | --- | --- |"]
    rows = [("COCO's evaluation", lambda run: 100 * run["coco"]["AP50"], ("win", "loss")),
            ("TIDE's", lambda run: run["tide"]["AP50"], ("win", "loss"))]
    errors = [name for name in runs[(base, seeds[0])]["tide"] if name != "AP50"]
    rows += [(f"added by fixing {name}", lambda run, name=name: run["tide"][name], ("more lost", "less lost"))
             for name in errors]
    for label, value, verdicts in rows:
        base_values, values = ([value(runs[(folder, seed)]) for seed in seeds] for folder in (base, method))
        if any(base_values) or any(values):  # one class: no class errors to show
            lines.append(_paired_row(label, base_values, values, verdicts))
    return "\n".join(lines) + "\n"


def _record_block(kind: str, args_text: str) -> tuple[str, dict, list[str], list[str]]:
    """RECORD | BASELINE=FOLDER | METHOD=FOLDER of a record block: the record's path, its content
    and the two (title, folder) columns."""
    path, *columns = (part.strip() for part in args_text.split("|"))
    if len(columns) != 2 or not all("=" in column for column in columns):
        raise ValueError(f"<!-- {kind}: {args_text} -->: needs RECORD | BASELINE=FOLDER | METHOD=FOLDER")
    base, method = (column.split("=", 1) for column in columns)
    return path, json.loads((REPO / path).read_text()), base, method


def _paired_runs(by_run: dict, base: str, method: str, block: str, path: str) -> tuple[dict, list[str]]:
    """A record's entries keyed by (FOLDER, seed folder), FOLDER being the end of the run's parent
    folder, and the seeds that both ``base`` and ``method`` have."""
    runs = {}
    for run, entry in by_run.items():
        parent = Path(run).parent.as_posix()
        for folder in (base, method):
            if parent == folder or parent.endswith("/" + folder):
                runs[(folder, Path(run).name)] = entry
    seeds = sorted({s for m, s in runs if m == base} & {s for m, s in runs if m == method})
    if not seeds:
        raise ValueError(f"{block}no seed of both {base} and {method} in {path}")
    return runs, seeds


def _gap_title(seeds: list[str]) -> str:
    return f"gap ({len(seeds)} paired seed{'s' * (len(seeds) != 1)}) [95 % CI]"


def _paired_row(label: str, base_values: list[float], values: list[float],
                verdicts: tuple[str, str] = ("win", "loss")) -> str:
    return (f"| {label} | {statistics.fmean(base_values):.1f} | {statistics.fmean(values):.1f} | "
            f"{report.gap_cell(list(report.paired_gap(values, base_values)), '**', verdicts)} |")


def _folder_and_ranking(column: str) -> tuple[str, str | None]:
    """``FOLDER`` or ``FOLDER@RANKING`` of a rank-oracle column."""
    folder, _, ranking = column.partition("@")
    return folder, ranking or None


def refresh(text: str) -> tuple[str, list[str]]:
    """``text`` with every table regenerated, and the ARGS of the tables that changed."""
    changed = []

    def replace(match: re.Match) -> str:
        table = generate(match["args"])
        if table != match["table"]:
            changed.append(match["args"])
        return match["head"] + table + match["tail"]

    def replace_gaps(match: re.Match) -> str:
        table = generate_gaps(match["titles"], match["rows"])
        if table != match["table"]:
            changed.append("gaps: " + "; ".join(m["label"].strip() for m in ROW.finditer(match["rows"])))
        return match["head"] + table + match["tail"]

    def record_table(kind: str, generate_table) -> Callable[[re.Match], str]:
        def replace_record(match: re.Match) -> str:
            table = generate_table(match["args"])
            if table != match["table"]:
                changed.append(f"{kind}: " + match["args"])
            return match["head"] + table + match["tail"]
        return replace_record

    text = GAPS.sub(replace_gaps, BLOCK.sub(replace, text))
    text = ORACLE.sub(record_table("rank-oracle", generate_rank_oracle), text)
    return TIDE.sub(record_table("tide", generate_tide), text), changed


def figures_without_table(text: str, tables_text: str) -> list[str]:
    """The "mean ± std" figures of ``text`` that no cell of the generated tables in ``tables_text``
    holds."""
    tables = [block["table"] for pattern in (BLOCK, GAPS) for block in pattern.finditer(tables_text)]
    cells = {m.group(0) for table in tables for m in FIGURE.finditer(table)}
    return [m.group(0) for m in FIGURE.finditer(text) if m.group(0) not in cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="Markdown files")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text = path.read_text()
        try:
            new, changed = refresh(text)
        except ValueError as error:
            raise SystemExit(f"{path}: {error}") from None
        stale += [f"{path}: <!-- {a if a.startswith(('gaps: ', 'rank-oracle: ', 'tide: ')) else 'compare: ' + a} -->"
                  for a in changed]
        if changed and not args.check:
            path.write_text(new)
    for line in stale:
        print(("differs from its records: " if args.check else "regenerated: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
