"""Training curves from the metrics.jsonl of one or more runs: loss terms, learning rate and AP.

    python tools/plot_metrics.py work_dirs/dw work_dirs/fcos --out curves.png

Each argument is a run folder (its metrics.jsonl is read) or a metrics.jsonl file; the runs are
drawn on shared axes, labelled by folder name. A resumed run may log some iterations twice; the
last record of an iteration wins.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from dwdet.engine.metrics import read_metrics  # noqa: E402

AP_KEYS = ("AP", "AP50", "AP75")


def plot_runs(paths: List[str], out: str) -> None:
    runs = {os.path.basename(os.path.normpath(p)) or p: read_metrics(p) for p in paths}
    loss_keys = sorted({k for run in runs.values() for r in run["train"].values() for k in r
                        if k.startswith("loss")})
    panels = loss_keys + ["lr"] + (["AP"] if any(run["val"] for run in runs.values()) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        for name, run in runs.items():
            if key == "AP":
                for ap_key, style in zip(AP_KEYS, ("-o", "--s", ":^")):
                    its = sorted(run["val"])
                    ax.plot(its, [100 * run["val"][i][ap_key] for i in its], style, label=f"{name} {ap_key}")
            else:
                its = [i for i in sorted(run["train"]) if key in run["train"][i]]
                ax.plot(its, [run["train"][i][key] for i in its], label=name)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if key.startswith("loss"):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders or metrics.jsonl files")
    parser.add_argument("--out", default="curves.png", help="the PNG to write")
    args = parser.parse_args(argv)
    plot_runs(args.runs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
