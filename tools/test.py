"""Evaluate a checkpoint on the config's validation set (COCO bbox AP), on one or more GPUs.

    python tools/test.py configs/dw_r50_fpn_1x_coco.py work_dirs/dw/epoch_12.pth
    torchrun --nproc_per_node=8 tools/test.py configs/dw_r50_fpn_1x_coco.py work_dirs/dw/epoch_12.pth \\
        --out results.json eval.batch_size=2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch.distributed as dist  # noqa: E402

from dwdet.config import load_config  # noqa: E402
from dwdet.engine import builders, evaluate, load_checkpoint  # noqa: E402
from dwdet.engine.loaders import eval_loader  # noqa: E402
from dwdet.utils.dist import init_distributed, is_main_process  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (.py, or a run's config.json)")
    parser.add_argument("checkpoint", help="a checkpoint written by tools/train.py")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="more config overrides")
    parser.add_argument("--work-dir", help="where to write metrics.json (default: the checkpoint's folder)")
    parser.add_argument("--out", help="also write the COCO results JSON here")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="match detections to boxes whatever their classes (localisation and ranking only)")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the options


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides + args.opts)
    work_dir = args.work_dir or os.path.dirname(os.path.abspath(args.checkpoint))
    try:
        device = init_distributed()
        model = builders.build_model(cfg)
        model.load_state_dict(load_checkpoint(args.checkpoint)["model"])
        dataset, evaluator = builders.build_val_data(cfg)
        loader = eval_loader(dataset, cfg.eval.batch_size, cfg.eval.num_workers)
        metrics = evaluate(model.to(device), loader, evaluator, device, cfg.train.amp, results_path=args.out,
                           class_agnostic=args.class_agnostic)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if is_main_process():
        os.makedirs(work_dir, exist_ok=True)
        suffix = "_class_agnostic" if args.class_agnostic else ""
        path = os.path.join(work_dir, f"metrics_{Path(args.checkpoint).stem}{suffix}.json")
        with open(path, "w") as f:
            json.dump({"checkpoint": os.path.abspath(args.checkpoint), **metrics}, f, indent=2)
        print(f"metrics written to {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
