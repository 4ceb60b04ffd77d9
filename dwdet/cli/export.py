"""Write a checkpoint for inference and sharing: the model's weights with the config, class names
and input normalisation that ``dwdet-test`` and ``dwdet-infer`` read, without the optimizer,
schedule and RNG states a training checkpoint carries for resuming (half of its size).

    dwdet-export work_dirs/demo_model/last.pth weights/dw_r10_shapes16_demo.pth --half

``--half`` stores the floating-point weights in half precision (half the size again); the model
still computes in float32, from those rounded values. The exported file is loaded back and checked
against its config before the command succeeds.

``--onnx`` writes the model as an ONNX graph instead, for images of any size, post-processing and
class names included; the graph is run once in onnxruntime before the command succeeds (see
dwdet/onnx_export.py):

    dwdet-export weights/dw_r10_shapes16_demo.pth demo.onnx --onnx
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
    parser.add_argument("out", help="the file to write (.pth, or .onnx with --onnx)")
    parser.add_argument("--half", action="store_true", help="floating-point weights in half precision")
    parser.add_argument("--onnx", action="store_true", help="write an ONNX graph of the model instead")
    args = parser.parse_args(argv)
    if args.onnx and args.half:
        parser.error("--half applies to checkpoints; an ONNX graph keeps float32 weights")
    return args


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


def export_onnx_graph(source: str | os.PathLike, out: str | os.PathLike) -> None:
    """Write checkpoint ``source``'s model as an ONNX graph and run it once in onnxruntime."""
    import torch
    from dwdet.onnx_export import OUTPUT_NAMES, export_onnx, run_onnx
    model, _, categories = builders.load_detector(source)
    export_onnx(model, out, categories)
    outputs = run_onnx(out, torch.rand(3, 120, 90))  # fails here, not in a user's hands, if it does not run
    shapes = {name: (tuple(outputs[name].shape), outputs[name].dtype) for name in OUTPUT_NAMES}
    if outputs["boxes"].shape[1:] != (4,) or len({len(t) for t in outputs.values()}) != 1:
        raise RuntimeError(f"the ONNX graph {out} returned outputs of unexpected shapes: {shapes}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    if args.onnx:
        export_onnx_graph(args.checkpoint, args.out)
        logger.info("exported %s to the ONNX graph %s (%.1f MB)", args.checkpoint, args.out,
                    os.path.getsize(args.out) / 1e6)
        return 0
    export_checkpoint(args.checkpoint, args.out, args.half)
    logger.info("exported %s to %s (%.1f MB)", args.checkpoint, args.out, os.path.getsize(args.out) / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
