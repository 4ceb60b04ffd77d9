"""Train a detector.

    dwdet-train configs/dw_r50_fpn_1x_coco.py train.lr=0.02
    torchrun --nproc_per_node=8 tools/train.py configs/dw_r50_fpn_1x_coco.py --work-dir work_dirs/dw
    torchrun --nproc_per_node=8 tools/train.py configs/dw_r50_fpn_1x_coco.py --resume   # from work-dir/last.pth

SIGTERM saves ``last.pth`` and exits with status 0; ``--resume`` then continues exactly (with the
same number of processes; ``--allow-world-size-change`` continues on another, inexactly). The run
folder gets the resolved config, ``train.log``, ``metrics.jsonl``, TensorBoard events and the
checkpoints.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

import torch.distributed as dist

from dwdet.cli.common import add_config_arguments, print_config
from dwdet.config import load_config
from dwdet.engine import NonFiniteLossError, Trainer
from dwdet.utils.dist import is_main_process

logger = logging.getLogger("dwdet.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dwdet-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--work-dir", help="run folder (default: work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="continue from CHECKPOINT, or with no value from <work-dir>/last.pth if it exists")
    parser.add_argument("--allow-world-size-change", action="store_true",
                        help="resume a checkpoint written by another number of processes (or per-process "
                             "batch): continues at the same point of the schedule, but not bitwise exactly")
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
    if args.print_config:
        return print_config(cfg)
    work_dir = args.work_dir or os.path.join("work_dirs", Path(args.config).stem)
    try:
        # No name keeps the trainer: it and its DDP model are freed before the process group they
        # use is destroyed (a test worker that kept them until the interpreter's exit had gloo abort
        # a rank about one run in twelve).
        result = Trainer(cfg, work_dir, resume=resolve_resume(args.resume, work_dir),
                         allow_world_size_change=args.allow_world_size_change).fit()
    except NonFiniteLossError as err:
        logger.error("%s", err)
        return 1
    finally:
        if dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
    logger.info("%s at epoch %d, iteration %d; checkpoints in %s", result["status"], result["epoch"],
                result["iteration"], work_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
