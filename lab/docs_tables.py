"""The docs' result tables, made from their run records: every table between
``<!-- compare: ARGS -->`` and ``<!-- /compare -->`` in a Markdown file is the report that
``python -m lab.compare ARGS --report-only`` gives from the records that ARGS names (``--records``; the
table of means, then the paired gaps), and nothing else.

    python -m lab.docs_tables docs/studies/*.md                # rewrite the tables from their records
    python -m lab.docs_tables --check docs/studies/*.md README.md  # exit 1 naming each table that differs

A figure elsewhere in a page ("37.8 ± 1.0") can be checked against the tables with
``figures_without_table``: tests/lab/test_docs_tables.py does so for the README.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from lab import compare, report, runner

REPO = Path(__file__).resolve().parents[1]

BLOCK = re.compile(r"(?P<head><!-- compare: (?P<args>[^\n]*?) -->\n)(?P<table>.*?)(?P<tail><!-- /compare -->)", re.S)
FIGURE = re.compile(r"(\d+\.\d) ± (\d+\.\d)")


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


def refresh(text: str) -> tuple[str, list[str]]:
    """``text`` with every table regenerated, and the ARGS of the tables that changed."""
    changed = []

    def replace(match: re.Match) -> str:
        table = generate(match["args"])
        if table != match["table"]:
            changed.append(match["args"])
        return match["head"] + table + match["tail"]

    return BLOCK.sub(replace, text), changed


def figures_without_table(text: str, tables_text: str) -> list[str]:
    """The "mean ± std" figures of ``text`` that no cell of the generated tables in ``tables_text``
    holds."""
    cells = {m.group(0) for block in BLOCK.finditer(tables_text) for m in FIGURE.finditer(block["table"])}
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
        stale += [f"{path}: <!-- compare: {a} -->" for a in changed]
        if changed and not args.check:
            path.write_text(new)
    for line in stale:
        print(("differs from its records: " if args.check else "regenerated: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
