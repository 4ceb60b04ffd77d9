"""The label-assignment comparison on the synthetic benchmark: train every method with several
seeds on the same backbone, data and schedule, then tabulate COCO AP (mean ± std over seeds) and
draw a bar chart and the loss curves.

    python -m lab.compare                          # the methods study, 3 seeds, then the report
    python -m lab.compare --study wneg             # table 5's w_neg ablation
    python -m lab.compare --study neg              # DW with its negative term x10, x100 and as on COCO
    python -m lab.compare --study warmstart        # FCOS vs DW continuing from the FCOS weights
    python -m lab.compare --study assigners        # FCOS, ATSS, GFL, VFL, TOOD and DW side by side
    python -m lab.compare --study shapes80 --jobs 2  # FCOS vs DW on shapes80 (also shapes80_length,
                                                   # shapes80_neg, shapes80_assigners)
    python -m lab.compare --jobs 2 --opts train.epochs=24 model.min_size='(256,)' model.max_size=256
    python -m lab.compare --study patterns80_adamw --methods p80a_fcos p80a_dw --jobs 2  # the 20-minute recipe
    python -m lab.compare --study shapes80_adamw --seeds 0 --jobs 2  # that recipe on shapes80
    python -m lab.compare --study shapes80_length --methods s80_fcos_e12 s80_dw_e12 --seeds 0 --jobs 2
    python -m lab.compare --study patterns80_lr --seeds 0 --jobs 2  # FCOS's and DW's lr, each swept on val
    python -m lab.compare --study treecrowns --seeds 0 1 2 3 4 --jobs 2 --split test  # then on the test split
    python -m lab.compare --report-only            # rebuild the report from finished runs
    python -m lab.compare --study patterns80_assigners --report-only --records docs/results/patterns80_runs.jsonl
    python -m lab.compare --study treecrowns_dw_ablation --seeds 0 --jobs 2 --out work_dirs/treecrowns \
        --merge-into docs/results/treecrowns_imagenet_runs.jsonl  # the page's records, new runs added

Each run is ``tools/train.py <config> <overrides> train.seed=<seed>`` in
``<out>/<method>/seed<seed>``, its log in ``train.log`` there and its console in ``console.log``; a
finished run (``result.json``) is skipped and an interrupted one resumes from its ``last.pth``, so
the command can simply be rerun. ``--jobs`` runs that many trainings at once, sharing the CPU threads between them (on a GPU
machine keep ``--jobs 1``). ``--opts`` applies to every run (e.g. a longer schedule or larger
images on a GPU). The report is ``results.json``, ``results.md``, ``ap.png`` and ``loss.png`` in
``<out>``, and ``runs.jsonl``: one line per finished run (its result.json). Those lines are small
enough to keep beside the docs when the run folders go; ``--records`` reads them back, so a report
can cover runs made in another checkout (a run folder under ``<out>`` wins over a record of the
same method and seed), and ``--merge-into`` merges them into a page's records file. A record holds
the run's metrics on val, its resolved config, command, environment (revision, CPU, ISA, threads)
and first loss; ``--split test`` adds the metrics of its
``last.pth`` on the benchmark's test split (once per run; choices are made on val, numbers are
reported on test) and reports those. The studies themselves are in lab/studies.py, the runs'
bookkeeping in lab/runner.py and the report in lab/report.py.

Beside the table, the report gives each method's **paired gap** to the baseline (``--baseline``,
by default the study's first method): over the seeds both ran (same seed: same data order and
same initial weights of the shared parts), the mean of the per-seed differences and its 95 %
confidence interval (Student's t); a "win" is an interval above 0, a "loss" one below.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from lab.report import report
from lab.runner import (LATER_SPLITS, evaluate_split, merge_records, planned_runs, read_records, run_dir, say,
                        selected_methods, train)
from lab.studies import STUDIES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=[*STUDIES, "all"], default="methods", help="which methods to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (init and order)")
    parser.add_argument("--out", default="work_dirs/compare", help="folder of the runs and the report")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (they share the CPU threads)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per training (default: the machine's divided by --jobs); set it when "
                             "other work shares the machine, e.g. a second lab.compare")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="config overrides for every run")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                        help="train only these methods of the study (the report still covers all of it)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    parser.add_argument("--records", nargs="+", default=[], metavar="JSONL",
                        help="runs.jsonl files of runs made elsewhere, to include in the report")
    parser.add_argument("--split", choices=("val", *LATER_SPLITS), default="val",
                        help="the split the report gives: test evaluates every finished run's last.pth on the "
                             "benchmark's test split once (kept in its result.json)")
    parser.add_argument("--merge-into", metavar="JSONL",
                        help="also merge the report's run records into this runs.jsonl (the docs' records of "
                             "a page), one line per method and seed, keeping test evaluations it already has")
    parser.add_argument("--baseline", metavar="NAME", help="the method the paired gaps are taken against "
                                                           "(default: the study's first with runs)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    known = [m.name for m in selected_methods(args.study)]
    if args.baseline is not None and args.baseline not in known:
        parser.error(f"--baseline {args.baseline}: not in study {args.study!r}, whose methods are {known}")
    if args.methods is not None:
        unknown = [name for name in args.methods if name not in known]
        if unknown:
            parser.error(f"--methods {' '.join(unknown)}: not in study {args.study!r}, whose methods are {known}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)  # the trainings run from the repository root
    methods = selected_methods(args.study)
    records = read_records(args.records)
    code = 0
    if not args.report_only:
        runs = planned_runs([m for m in methods if args.methods is None or m.name in args.methods], args.seeds)
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        # runs that need another run (its weights to start from, or to evaluate) go second, once
        # those have finished; the evaluation on the test split last, on every finished run
        phases = [(train, [r for r in runs if r[0].depends_on is None]),
                  (train, [r for r in runs if r[0].depends_on is not None])]
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
    summary = report(methods, args.out, records, args.split, args.baseline)
    if args.merge_into:
        lines = merge_records(args.merge_into, [run for entry in summary.values() for run in entry["runs"]])
        say(f"{lines} records in {args.merge_into}")
    return code


if __name__ == "__main__":
    sys.exit(main())
