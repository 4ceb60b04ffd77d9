"""Train a detector.

    python tools/train.py configs/dw_r50_fpn_1x_coco.py train.lr=0.02
    torchrun --nproc_per_node=8 tools/train.py configs/dw_r50_fpn_1x_coco.py --work-dir work_dirs/dw
    torchrun --nproc_per_node=8 tools/train.py configs/dw_r50_fpn_1x_coco.py --resume   # from work-dir/last.pth

SIGTERM saves ``last.pth`` and exits with status 0; ``--resume`` then continues exactly.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch.distributed as dist  # noqa: E402

from dwdet.config import load_config  # noqa: E402
from dwdet.engine import NonFiniteLossError, Trainer  # noqa: E402
from dwdet.utils.dist import is_main_process  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (.py, or a run's config.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.02")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="more config overrides")
    parser.add_argument("--work-dir", help="run folder (default: work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="continue from CHECKPOINT, or with no value from <work-dir>/last.pth if it exists")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the options


def resolve_resume(resume: str | None, work_dir: str) -> str | None:
    if resume != "auto":
        return resume
    last = os.path.join(work_dir, "last.pth")
    if os.path.exists(last):
        return last
    if is_main_process():
        print(f"--resume: no {last} yet, starting from scratch", flush=True)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides + args.opts)
    work_dir = args.work_dir or os.path.join("work_dirs", Path(args.config).stem)
    try:
        # No name keeps the trainer: it and its DDP model are freed before the process group they
        # use is destroyed (a test worker that kept them until the interpreter's exit had gloo abort
        # a rank about one run in twelve).
        result = Trainer(cfg, work_dir, resume=resolve_resume(args.resume, work_dir)).fit()
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
    if is_main_process():
        print(f"{result['status']} at epoch {result['epoch']}, iteration {result['iteration']}; "
              f"checkpoints in {work_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
