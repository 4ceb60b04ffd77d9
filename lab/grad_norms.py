"""How much larger one method's gradients are than another's, run against run: the ratio of the
``grad_norm`` (of all parameters, before the optimiser step) that two paired runs logged at the
same iterations, per seed over the whole run and per quarter of it.

    python -m lab.grad_norms work_dirs/compare/p80a_fcos work_dirs/compare/p80a_dw --seeds 0 1 2 \\
        --json docs/results/patterns80_grad_norms.json

With SGD a step is the lr times the gradient, so a method whose gradients are larger trains as if
at a larger lr; AdamW's steps do not grow with the gradient's scale.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from dwdet.engine.metrics import read_metrics
from dwdet.engine.runtime import environment_record
from dwdet.utils.io import write_json

QUARTERS = 4


def ratios(base_run: Path, run: Path) -> list[float]:
    """``run``'s grad_norm over ``base_run``'s at each iteration both logged, in order."""
    base, other = (read_metrics(str(r))["train"] for r in (base_run, run))
    shared = sorted(set(base) & set(other))
    if not shared:
        raise SystemExit(f"{base_run} and {run} logged no grad_norm at the same iterations")
    return [other[i]["grad_norm"] / base[i]["grad_norm"] for i in shared]


def summary(values: list[float]) -> dict:
    """The median ratio, and the median of each quarter of the run."""
    size = len(values) / QUARTERS
    quarters = [values[round(k * size):round((k + 1) * size)] for k in range(QUARTERS)]
    return {"iterations": len(values), "median": statistics.median(values),
            "quarters": [statistics.median(q) if q else None for q in quarters]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the baseline method's folder of seed folders (seed0, seed1, ...)")
    parser.add_argument("method", type=Path, help="the other method's folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", help="also write the ratios here, with the environment (revision, command)")
    args = parser.parse_args(argv)
    per_seed = {seed: summary(ratios(args.base / f"seed{seed}", args.method / f"seed{seed}")) for seed in args.seeds}
    print(f"grad_norm of {args.method.name} / {args.base.name}, median per seed and by quarter of the run")
    for seed, s in per_seed.items():
        print(f"seed {seed}: {s['median']:.2f} ({', '.join(f'{q:.2f}' for q in s['quarters'] if q is not None)}), "
              f"{s['iterations']} iterations")
    if args.json:
        write_json({"environment": environment_record(), "base": str(args.base), "method": str(args.method),
                    "per_seed": per_seed}, args.json, indent=1)


if __name__ == "__main__":
    main()
