"""Detect objects in images with a checkpoint alone: a COCO-style results JSON plus a PNG per image
with the boxes drawn and captioned with their class names.

    dwdet-infer work_dirs/dw/epoch_12.pth photos/ street.jpg --out-dir out/ --score-thr 0.3
    dwdet-infer work_dirs/dw/epoch_12.pth photos/ --opts model.test_min_size=600 --device cpu
    dwdet-infer work_dirs/demo/last.pth val/000001.jpg val/000002.jpg --grid detections.png  # one picture

The checkpoint carries the model's config, class names and input normalisation. A checkpoint
written before it did (version 1) needs ``--categories``: the COCO annotation file it was trained
on (its categories sorted by id give labels 0, 1, ...).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

from dwdet.cli.common import add_print_config, print_config
from dwdet.engine import builders
from dwdet.engine.evaluation import detections_to_coco
from dwdet.utils.io import write_json
from dwdet.utils.logger import setup_logging
from dwdet.utils.visualize import draw_detections

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

logger = logging.getLogger("dwdet.infer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dwdet-infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint written by dwdet-train (or tools/convert_mmdet_checkpoint.py)")
    parser.add_argument("inputs", nargs="*", help="image files and/or folders of images")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value",
                        help="overrides of the checkpoint's config, e.g. model.score_thresh=0.1")
    add_print_config(parser)
    parser.add_argument("--out-dir", default="infer_out", help="where results.json and the PNGs go")
    parser.add_argument("--score-thr", type=float, default=0.3, help="lowest score drawn (the JSON keeps all)")
    parser.add_argument("--categories", help="COCO annotation file naming the classes of a version 1 checkpoint")
    parser.add_argument("--grid", metavar="PNG", help="also tile all the drawn images into this one PNG")
    parser.add_argument("--grid-columns", type=int, default=4, help="images per row of --grid")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_intermixed_args(argv)


def list_images(inputs: list[str]) -> list[Path]:
    images = []
    for item in map(Path, inputs):
        if item.is_dir():
            images += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            images.append(item)
        else:
            raise FileNotFoundError(f"input not found: {item}")
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(inputs)}")
    return images


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.checkpoint.endswith(".py"):
        raise SystemExit(f"dwdet-infer takes CHECKPOINT IMAGES...: the config travels in the checkpoint "
                         f"({args.checkpoint} looks like a config file; change settings with --opts)")
    if not args.inputs and not args.print_config:
        raise SystemExit("dwdet-infer: give image files or folders after the checkpoint")
    paths = list_images(args.inputs) if args.inputs else []  # before the model: a typo fails fast
    setup_logging()
    categories = builders.read_categories(args.categories) if args.categories else None
    model, cfg, categories = builders.load_detector(args.checkpoint, args.opts, categories)
    if args.print_config:
        return print_config(cfg)
    names = [c["name"] for c in categories]
    category_ids = [c["id"] for c in categories]
    device = torch.device(args.device)
    model.to(device)
    os.makedirs(args.out_dir, exist_ok=True)

    results, drawings = [], []
    for image_id, path in enumerate(paths):
        with Image.open(path) as image:
            pixels = pil_to_tensor(image.convert("RGB"))
        detections = model([pixels.to(device).float() / 255])[0]  # RGB in [0, 1]: the checkpoint's input spec
        entries = detections_to_coco(image_id, detections, category_ids)
        results += [{**entry, "file_name": str(path), "category_name": names[label]}
                    for entry, label in zip(entries, detections["labels"].tolist())]
        drawn = draw_detections(pixels, detections, names, args.score_thr)
        to_pil_image(drawn).save(os.path.join(args.out_dir, f"{image_id:05d}_{path.stem}.png"))
        if args.grid:
            drawings.append(drawn)
    written = write_json(results, os.path.join(args.out_dir, "results.json"))
    logger.info("%d detections on %d images written to %s (results in %s)", len(results), len(paths),
                args.out_dir, written)
    if args.grid:
        os.makedirs(os.path.dirname(os.path.abspath(args.grid)), exist_ok=True)
        to_pil_image(tile(drawings, args.grid_columns)).save(args.grid)
        print(f"detections drawn on {len(paths)} images: {os.path.abspath(args.grid)}", flush=True)
    return 0


def tile(images: list[torch.Tensor], columns: int) -> torch.Tensor:
    """One (3, H, W) uint8 picture of ``images`` (each padded to the largest) in rows of ``columns``."""
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    padded = [torch.nn.functional.pad(i, (0, width - i.shape[2], 0, height - i.shape[1]), value=255) for i in images]
    return make_grid(torch.stack(padded), nrow=max(1, columns), padding=4, pad_value=255)


if __name__ == "__main__":
    sys.exit(main())
