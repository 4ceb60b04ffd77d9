"""Detect objects in images with a checkpoint alone: a COCO-style results JSON plus a PNG per image
with the boxes drawn and captioned with their class names.

    dwdet-infer work_dirs/dw/epoch_12.pth photos/ street.jpg --out-dir out/ --score-thr 0.3
    dwdet-infer work_dirs/dw/epoch_12.pth photos/ --opts model.test_min_size=600 --device cpu
    dwdet-infer work_dirs/demo/last.pth val/000001.jpg val/000002.jpg --grid detections.png  # one picture

The checkpoint carries the model's config, class names and input normalisation. A checkpoint
written before it did (version 1) needs ``--categories``: the COCO annotation file it was trained
on (its categories sorted by id give labels 0, 1, ...).

results.json keeps every detection the model returns (above ``model.score_thresh``, 0.05 unless
overridden); the PNGs show those scoring at least ``--score-thr``, and the log says how many that
is. An image that cannot be read is skipped with a warning that names it; the command fails (exit
status 1) only when no image could be read. If --out-dir cannot be created (a file in the way, no
permission), the outputs go to a new folder in the temporary folder, and the log names it.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path

import torch
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from dwdet.api import Detector, ImageReadError, read_image
from dwdet.cli.common import add_print_config, print_config
from dwdet.engine import builders
from dwdet.engine.evaluation import detections_to_coco
from dwdet.utils.io import output_folder, write_bytes, write_json
from dwdet.utils.logger import setup_logging
from dwdet.utils.visualize import draw_detections

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

logger = logging.getLogger("dwdet.infer")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every option's default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dwdet-infer", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint written by dwdet-train (or tools/convert_mmdet_checkpoint.py)")
    parser.add_argument("inputs", nargs="*", help="image files and/or folders of images")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value",
                        help="overrides of the checkpoint's config, e.g. model.score_thresh=0.1")
    add_print_config(parser)
    parser.add_argument("--out-dir", default="infer_out", help="where results.json and the PNGs go")
    parser.add_argument("--score-thr", type=float, default=0.3, help="lowest score drawn (results.json keeps all)")
    parser.add_argument("--categories", help="COCO annotation file naming the classes of a version 1 checkpoint")
    parser.add_argument("--grid", metavar="PNG", help="also tile all the drawn images into this one PNG")
    parser.add_argument("--grid-columns", type=int, default=4, help="images per row of --grid")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (of the same size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the model runs: cpu, cuda, cuda:1, ...")
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
    detector = Detector(model, categories, args.device, args.batch_size, cfg)
    if args.print_config:
        return print_config(detector.config)
    out_dir = output_folder(args.out_dir)
    category_ids = [c["id"] for c in detector.categories]

    results, drawings, unreadable, drawn_count = [], [], [], 0
    # images are read one batch at a time: a folder of any size fits in memory
    for start in range(0, len(paths), args.batch_size):
        batch = []  # (image id, path, pixels); the id is the place in the input list, skipped or not
        for image_id, path in enumerate(paths[start:start + args.batch_size], start):
            try:
                batch.append((image_id, path, read_image(path)))
            except ImageReadError as err:
                logger.warning("skipped: %s", err)
                unreadable.append(path)
        if not batch:
            continue
        for (image_id, path, pixels), found in zip(batch, detector.predict([pixels for _, _, pixels in batch])):
            entries = detections_to_coco(image_id, found.as_dict(), category_ids)
            results += [{**entry, "file_name": str(path), "category_name": name}
                        for entry, name in zip(entries, found.class_names)]
            drawn = draw_detections(pixels, found.as_dict(), detector.class_names, args.score_thr)
            drawn_count += int((found.scores >= args.score_thr).sum())
            write_bytes(png_bytes(drawn), os.path.join(out_dir, f"{image_id:05d}_{path.stem}.png"))
            if args.grid:
                drawings.append(drawn)
    read = len(paths) - len(unreadable)
    if unreadable:
        logger.warning("%d of %d images could not be read and were skipped: %s", len(unreadable), len(paths),
                       ", ".join(map(str, unreadable)))
    if not read:
        logger.error("no image could be read; nothing was written")
        return 1
    written = write_json(results, os.path.join(out_dir, "results.json"))
    logger.info("%d detections on %d images written to %s; %d of them score at least --score-thr %g and are drawn "
                "in the PNGs in %s", len(results), read, written, drawn_count, args.score_thr, out_dir)
    if results and not drawn_count:
        logger.warning("no detection scores %g or more (the best scores %.3f): lower --score-thr to draw some",
                       args.score_thr, max(r["score"] for r in results))
    if args.grid:
        grid = write_bytes(png_bytes(tile(drawings, args.grid_columns)), args.grid)
        print(f"detections drawn on {read} images: {os.path.abspath(grid)}", flush=True)
    return 0


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


def tile(images: list[torch.Tensor], columns: int) -> torch.Tensor:
    """One (3, H, W) uint8 picture of ``images`` (each padded to the largest) in rows of ``columns``."""
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    padded = [torch.nn.functional.pad(i, (0, width - i.shape[2], 0, height - i.shape[1]), value=255) for i in images]
    return make_grid(torch.stack(padded), nrow=max(1, columns), padding=4, pad_value=255)


if __name__ == "__main__":
    sys.exit(main())
