"""Speed of each training loss (``loss.type``), forward + backward, on COCO-like head outputs.

    python tools/bench_losses.py [--device cpu|cuda] [--gts 10 100] [--json docs/bench_losses_cpu.json]

An 800 x 1333 input padded to 800 x 1344 (P = 22,400 points over P3-P7), batch 2, 80 classes and
G random boxes per image (the problem of tools/bench_ops.py). Each loss is built with its default
(published) settings, and TOOD past its warm-up. Times are medians of torch.utils.benchmark
measurements of one call of the loss and ``backward()`` on the sum of its terms.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import torch  # noqa: E402
import torch.utils.benchmark as tbench  # noqa: E402

from dwdet.losses import LOSSES, prepare_batch  # noqa: E402
from tools.bench_ops import CLASSES, STRIDES, make_problem  # noqa: E402


def loss_step(loss: torch.nn.Module, prob: dict) -> None:
    """The loss of a training step from the head's outputs on: the prepared batch, the loss, backward."""
    leaves = [[x.detach().requires_grad_() for x in prob[key]] for key in ("cls", "reg", "ctr")]
    targets = [{"boxes": b, "labels": l} for b, l in zip(prob["boxes"], prob["labels"])]
    sum(loss(prepare_batch(*leaves, targets, STRIDES)).values()).backward()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--gts", type=int, nargs="+", default=[10, 100], help="boxes per image")
    parser.add_argument("--methods", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of measurement per case")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = {}
    for num_gts in args.gts:
        prob = make_problem(num_gts, args.device)
        for method in args.methods:
            loss = LOSSES[method](CLASSES)
            if hasattr(loss, "set_epoch"):
                loss.set_epoch(10**6)  # past any warm-up
            loss_step(loss, prob)  # warm-up call (allocator, first-use costs)
            timer = tbench.Timer("loss_step(loss, prob)", globals=dict(loss_step=loss_step, loss=loss, prob=prob),
                                 num_threads=torch.get_num_threads(), label="loss forward + backward",
                                 sub_label=method, description=f"G={num_gts}")
            m = timer.blocked_autorange(min_run_time=args.min_run_time)
            results[f"{method}/G={num_gts}"] = {"median_s": m.median, "runs": len(m.times)}
            print(f"{method:>5}  G={num_gts:<4}  {m.median * 1e3:8.1f} ms  ({len(m.times)} runs)", flush=True)
    report = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "results": results}
    print("\n| loss | " + " | ".join(f"G = {g}" for g in args.gts) + " |")
    print("| --- | " + " | ".join("---:" for _ in args.gts) + " |")
    for method in args.methods:
        cells = [f"{results[f'{method}/G={g}']['median_s'] * 1e3:.0f} ms" for g in args.gts]
        print(f"| {method} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
