"""The statistics of a config's dataset that bear on label assignment, as the model sees it.

    python tools/dataset_stats.py configs/lab/dw_r10_shapes80.py            # shapes80
    python tools/dataset_stats.py configs/dw_r50_fpn_1x_coco.py          # COCO (annotations only)

Read from the annotation file alone (no image is opened); sizes are those after the model's
resize (``model.test_min_size`` or the first ``model.min_size``, ``model.max_size``) and padding
to 32. Printed: images, objects per image, classes, points per image P over the FPN levels,
**(point, class) scores per object** (sum of P x C over the images / objects: how many background
scores the negative term spreads over each object), and the COCO small / medium / large shares
of the objects (by annotation area, as COCOeval counts them).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

from pycocotools.coco import COCO  # noqa: E402

from dwdet.config import load_config  # noqa: E402
from dwdet.engine.builders import annotation_file  # noqa: E402
from dwdet.models.transform import fit_size  # noqa: E402

STRIDES = (8, 16, 32, 64, 128)


def points_per_image(height: int, width: int) -> int:
    """Points of P3-P7 for an image padded to a multiple of 32 (P6, P7: stride-2 convs, rounding up)."""
    height, width = 32 * math.ceil(height / 32), 32 * math.ceil(width / 32)
    total, h, w = 0, height // 8, width // 8
    for _ in STRIDES:
        total += h * w
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return total


def dataset_stats(annotations: str, short_side: int, max_size: int) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress lines
        coco = COCO(annotations)
    num_classes = len(coco.cats)
    points, objects, areas = 0, 0, []
    for image in coco.imgs.values():
        anns = [a for a in coco.imgToAnns[image["id"]] if not a.get("iscrowd", 0)]
        points += points_per_image(*fit_size((image["height"], image["width"]), short_side, max_size))
        objects += len(anns)
        areas += [a["area"] for a in anns]
    images = len(coco.imgs)
    return {"images": images, "objects_per_image": objects / max(images, 1), "classes": num_classes,
            "points_per_image": points / max(images, 1),
            "scores_per_object": points * num_classes / max(objects, 1),
            "small": sum(a < 32**2 for a in areas) / max(objects, 1),
            "medium": sum(32**2 <= a < 96**2 for a in areas) / max(objects, 1),
            "large": sum(a >= 96**2 for a in areas) / max(objects, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--split", choices=("train", "val", "test"), default="train")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="config overrides")
    parser.add_argument("--json", help="also write the statistics here")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    min_size = cfg.model.min_size
    short_side = cfg.model.test_min_size or (min_size if isinstance(min_size, int) else min_size[0])
    stats = dataset_stats(annotation_file(cfg, args.split), short_side, cfg.model.max_size)
    print(f"{args.config} ({args.split}): {stats['images']} images, {stats['objects_per_image']:.2f} objects per "
          f"image, {stats['classes']} classes, {stats['points_per_image']:.0f} points per image, "
          f"{stats['scores_per_object']:.3g} (point, class) scores per object; objects small / medium / large "
          f"{100 * stats['small']:.0f} / {100 * stats['medium']:.0f} / {100 * stats['large']:.0f} %")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(stats, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
