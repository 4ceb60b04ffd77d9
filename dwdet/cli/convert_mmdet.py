"""Convert a checkpoint of the DW authors' MMDetection 2.x code (strongwolf/DW) into a dwdet
checkpoint that dwdet-test, dwdet-infer and train.init_from read.

    dwdet-convert-mmdet dw_r50_fpn_1x_coco.pth --config configs/dw_r50_fpn_1x_coco.py --out dw_r50.pth
    dwdet-convert-mmdet dw_r50_fpn_refine_1x.pth --config configs/dw_r50_fpn_refine_1x_coco.py --out dw_r50_refine.pth

``--config`` is the dwdet config of the same model (backbone, refinement); the number of classes
comes from the checkpoint. Every parameter is mapped by name with its shape checked
(dwdet/models/mmdet_weights.py, docs/mmdet_checkpoints.md); anything that does not fit is an error
naming every key concerned. The class names come from the checkpoint's ``meta.CLASSES``; the
category ids from ``--categories`` (a COCO annotation file), or for an 80-class checkpoint whose
classes are COCO's, COCO's ids. The input normalisation is that of the released models (ImageNet
mean and std on RGB images); a checkpoint whose saved config says otherwise is refused.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any

import torch

from dwdet.cli.common import add_print_config, print_config
from dwdet.config import load_config
from dwdet.data.coco import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from dwdet.engine import builders
from dwdet.engine.checkpoint import CheckpointError, save_checkpoint
from dwdet.models.mmdet_weights import ConversionError, convert_mmdet_state_dict
from dwdet.utils.logger import setup_logging

logger = logging.getLogger("dwdet.convert")

# MMDetection's img_norm_cfg of the released models: ImageNet statistics in 0..255 on RGB images.
RELEASED_MEAN = (123.675, 116.28, 103.53)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dwdet-convert-mmdet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="an MMDetection 2.x checkpoint of strongwolf/DW (.pth)")
    parser.add_argument("--config", required=True, help="the dwdet config of the same model")
    parser.add_argument("--out", required=True, help="the dwdet checkpoint to write")
    parser.add_argument("--categories", help="COCO annotation file whose categories (sorted by id) are the classes")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="config overrides")
    add_print_config(parser)
    return parser.parse_intermixed_args(argv)


def read_mmdet_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, meta) of an MMDetection checkpoint (``{"meta", "state_dict", ...}`` or a bare
    state dict), read without running pickled code."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} cannot be read as tensors and plain containers: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not an MMDetection checkpoint")
    state = ckpt.get("state_dict", ckpt)
    if "bbox_head.conv_cls.weight" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of an MMDetection dense head: it has no "
                              f"bbox_head.conv_cls.weight (keys: {sorted(state)[:6]} ...)")
    return dict(state), dict(ckpt.get("meta") or {})


def categories_of(meta: dict[str, Any], num_classes: int, annotations: str | None, source: str) -> list[dict]:
    names = meta.get("CLASSES")
    if annotations:
        categories = builders.read_categories(annotations)
        if len(categories) != num_classes:
            raise ConversionError(f"{annotations} has {len(categories)} categories but {source} predicts "
                                  f"{num_classes} classes")
        return categories
    if num_classes == len(COCO_CLASS_NAMES) and (names is None or tuple(names) == COCO_CLASS_NAMES):
        return [{"id": i, "name": n} for i, n in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)]
    raise ConversionError(f"{source} predicts {num_classes} classes that are not COCO's ({names!r}); give their "
                          f"annotation file with --categories")


def check_normalisation(meta: dict[str, Any], source: str) -> None:
    text = meta.get("config")
    if not isinstance(text, str) or "img_norm_cfg" not in text:
        return  # no saved config: the released models' normalisation is assumed
    match = re.search(r"img_norm_cfg\s*=\s*dict\(\s*mean=\[([^\]]*)\]", text)
    mean = tuple(float(x) for x in match.group(1).split(",")) if match else None
    if mean is None or any(abs(a - b) > 1e-3 for a, b in zip(mean, RELEASED_MEAN)) or "to_rgb=False" in text:
        raise ConversionError(f"{source} was trained with another input normalisation ({match.group(0) if match else 'unreadable'}"
                              f"); dwdet converts the released models, which use mean {list(RELEASED_MEAN)} on RGB")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    state, meta = read_mmdet_checkpoint(args.checkpoint)
    num_classes = int(state["bbox_head.conv_cls.weight"].shape[0])
    categories = categories_of(meta, num_classes, args.categories, args.checkpoint)
    check_normalisation(meta, args.checkpoint)
    cfg = builders.resolve_num_classes(load_config(args.config, args.opts).merge({"model": {"backbone_weights": None}}),
                                    categories, args.checkpoint)
    if args.print_config:
        return print_config(cfg)
    model = builders.build_model(cfg)
    weights, sigma = convert_mmdet_state_dict(state, model.state_dict())
    model.load_state_dict(weights)  # strict: every key was checked above
    data = cfg.to_dict()
    if sigma is not None and "sigma" in data.get("loss", {}):
        data["loss"]["sigma"] = sigma  # for fine-tuning with the same center prior
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "config": data, "categories": categories,
                     "input": builders.input_spec(model),
                     "converted_from": {"path": os.path.abspath(args.checkpoint),
                                        "mmdet_version": str(meta.get("mmdet_version", "unknown"))}}, args.out)
    logger.info("converted %s (%d tensors, %d classes) to %s", args.checkpoint, len(weights), num_classes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
