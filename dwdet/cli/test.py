"""Evaluate a checkpoint on the config's validation set (COCO bbox AP, also per class), on one or
more GPUs.

    dwdet-test configs/dw_r50_fpn_1x_coco.py work_dirs/dw/epoch_12.pth
    torchrun --nproc_per_node=8 tools/test.py configs/dw_r50_fpn_1x_coco.py work_dirs/dw/epoch_12.pth \\
        --out results.json --opts eval.batch_size=2

The config describes the model and the validation data (``model.num_classes`` comes from the
checkpoint's classes; inference settings can be overridden, e.g. ``--opts model.score_thresh=0.01``).
A run trained with ``train.ema`` is evaluated with its weight average, or with ``--trained-weights``
with the weights it trained.
Output folders are created; a file that cannot be written goes to the temporary folder instead,
and the log says where.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dwdet.cli.common import add_override_arguments, add_print_config, config_overrides, print_config
from dwdet.config import load_config
from dwdet.engine import builders, evaluate
from dwdet.engine.loaders import eval_loader
from dwdet.engine.runtime import environment_record
from dwdet.utils.dist import get_world_size, is_main_process, process_group
from dwdet.utils.io import write_json
from dwdet.utils.logger import setup_logging

logger = logging.getLogger("dwdet.test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dwdet-test", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (.py, or a run's config.json)")
    parser.add_argument("checkpoint", help="a checkpoint written by dwdet-train")
    add_override_arguments(parser)
    add_print_config(parser)
    parser.add_argument("--work-dir", help="where to write metrics_<checkpoint>.json (default: the checkpoint's "
                                           "folder)")
    parser.add_argument("--out", help="also write the COCO results JSON here")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="match detections to boxes whatever their classes (localisation and ranking only)")
    parser.add_argument("--trained-weights", action="store_true",
                        help="for a run trained with train.ema: evaluate its trained weights, not their average")
    return parser.parse_intermixed_args(argv)  # the positional arguments may come before or after the options


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, config_overrides(args))
    if args.print_config:
        return print_config(cfg)
    work_dir = args.work_dir or os.path.dirname(os.path.abspath(args.checkpoint))
    with process_group() as device:
        setup_logging()
        dataset, evaluator = builders.build_val_data(cfg)
        # a checkpoint older than version 2 names no classes: the validation set's are assumed
        model, _, categories = builders.load_detector(args.checkpoint, cfg=cfg, trained_weights=args.trained_weights,
                                                      categories=getattr(dataset, "categories", None))
        if [c["id"] for c in categories] != list(evaluator.category_ids):
            raise ValueError(f"{args.checkpoint} was trained on category ids {[c['id'] for c in categories]} but "
                             f"the validation annotations list {list(evaluator.category_ids)}")
        loader = eval_loader(dataset, cfg.eval.batch_size, cfg.eval.num_workers)
        metrics = evaluate(model.to(device), loader, evaluator, device, cfg.train.amp, results_path=args.out,
                           class_agnostic=args.class_agnostic)
        if is_main_process():  # (while the process group tells the ranks apart)
            suffix = "_trained" * args.trained_weights + "_class_agnostic" * args.class_agnostic
            path = os.path.join(work_dir, f"metrics_{Path(args.checkpoint).stem}{suffix}.json")
            # the batch too: its padding reaches the features (receptive fields, the head's GroupNorm), so the AP depends on it
            environment = environment_record(cfg.eval.batch_size * get_world_size())
            written = write_json({"checkpoint": os.path.abspath(args.checkpoint), **metrics, "environment": environment},
                                 path, indent=2)
            logger.info("metrics written to %s", written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
