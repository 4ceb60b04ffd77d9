"""Write a checkpoint for inference and sharing: the model's weights with the config, class names
and input normalisation that ``dwdet-test`` and ``dwdet-infer`` read, without the optimizer,
schedule and RNG states a training checkpoint carries for resuming (half of its size).

    dwdet-export work_dirs/demo_model/last.pth weights/dw_r10_shapes16_demo.pth --half

``--half`` stores the floating-point weights in half precision (half the size again); the model
still computes in float32, from those rounded values. The exported file is loaded back and checked
against its config before the command succeeds.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from dwdet.engine import builders
from dwdet.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dwdet.utils.logger import setup_logging

INFERENCE_KEYS = ("model", "config", "categories", "input")  # what load_detector reads

logger = logging.getLogger("dwdet.export")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dwdet-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint written by dwdet-train (or dwdet-convert-mmdet)")
    parser.add_argument("out", help="the file to write (.pth)")
    parser.add_argument("--half", action="store_true", help="floating-point weights in half precision")
    return parser.parse_args(argv)


def export_checkpoint(source: str | os.PathLike, out: str | os.PathLike, half: bool = False) -> None:
    """Write the inference part of checkpoint ``source`` to ``out`` (see the module docstring)."""
    ckpt = load_checkpoint(source)
    missing = [key for key in INFERENCE_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)}: it was written by an older dwdet; load it "
                              f"with its --categories in dwdet-infer instead of exporting it")
    state = ckpt["model"]
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_checkpoint({**{key: ckpt[key] for key in INFERENCE_KEYS}, "model": state,
                     "exported_from": {"path": os.path.abspath(source), "half": half}}, out)
    builders.load_detector(out)  # fails here, not in a user's hands, if the file does not load


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    export_checkpoint(args.checkpoint, args.out, args.half)
    logger.info("exported %s to %s (%.1f MB)", args.checkpoint, args.out, os.path.getsize(args.out) / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
