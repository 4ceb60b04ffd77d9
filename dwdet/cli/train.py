"""Train a detector.

    dwdet-train configs/dw_r50_fpn_1x_coco.py --opts train.lr=0.02
    torchrun --nproc_per_node=8 tools/train.py configs/dw_r50_fpn_1x_coco.py --work-dir work_dirs/dw
    torchrun --nproc_per_node=8 tools/train.py configs/dw_r50_fpn_1x_coco.py --resume   # from work-dir/last.pth

SIGTERM or Ctrl-C (SIGINT) saves ``last.pth`` after the iteration in progress and exits with status
0; ``--resume`` then continues exactly (with the same number of processes;
``--allow-world-size-change`` continues on another, inexactly). A new run (without ``--resume``) in a
folder that holds one is refused. The run folder gets the resolved config, ``train.log`` (errors
included), ``metrics.jsonl``, TensorBoard events and the checkpoints.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dwdet.cli.common import add_config_arguments, config_overrides, print_config
from dwdet.config import Config, ConfigError, load_config
from dwdet.engine import CheckpointError, NonFiniteLossError, RunFolderInUseError, Trainer, builders, \
    check_new_run_folder
from dwdet.utils.dist import is_main_process, process_group
from dwdet.utils.logger import setup_logging

logger = logging.getLogger("dwdet.train")

# errors that describe what to change (a path, a key, a value): their message says it all
USER_ERRORS = (ConfigError, CheckpointError, NonFiniteLossError, RunFolderInUseError, FileNotFoundError, ValueError)


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
    args = parser.parse_intermixed_args(argv)  # the config may come before or after the options
    if args.resume not in (None, "auto") and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.append(args.resume)  # `--resume key=value`: a (deprecated) positional override after --resume
        args.resume = "auto"
    return args


def resolve_resume(resume: str | None, work_dir: str) -> str | None:
    if resume != "auto":
        return resume
    last = os.path.join(work_dir, "last.pth")
    if os.path.exists(last):
        return last
    if is_main_process():
        logger.info("--resume: no %s yet, starting from scratch", last)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = config_overrides(args)
    if args.print_config:
        return print_config(_with_known_num_classes(load_config(args.config, overrides)))
    work_dir = args.work_dir or os.path.join("work_dirs", Path(args.config).stem)
    setup_logging(work_dir)  # so that train.log also has the errors of a run that cannot start
    try:
        with process_group():
            cfg = load_config(args.config, overrides)
            resume = resolve_resume(args.resume, work_dir)
            if args.resume is None:
                check_new_run_folder(work_dir)
            # The trainer stays unnamed: it and its DDP model are freed before the process group closes.
            result = Trainer(cfg, work_dir, resume=resume, allow_world_size_change=args.allow_world_size_change).fit()
    except USER_ERRORS as err:
        logger.error("%s", err)
        return 1
    except Exception:
        logger.exception("training failed")
        return 1
    logger.info("%s at epoch %d, iteration %d; checkpoints in %s", result["status"], result["epoch"],
                result["iteration"], work_dir)
    return 0


def _with_known_num_classes(cfg: Config) -> Config:
    """``cfg`` with ``model.num_classes`` read from a COCO training annotation file, as training
    will take it (left as it is for other data, or when the file cannot be read)."""
    if cfg.get("data", {}).get("type") != "coco":  # (another source may have to generate its data to read it)
        return cfg
    try:
        return builders.resolve_num_classes(cfg)
    except (OSError, ValueError) as err:
        print(f"model.num_classes is taken from {builders.annotation_file(cfg, 'train')} when training, which "
              f"cannot be read now: {err}", file=sys.stderr)
        return cfg


if __name__ == "__main__":
    sys.exit(main())
