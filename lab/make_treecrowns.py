"""The tree-crown benchmark: real aerial images of tree crowns (one class), tiled to COCO format, with
train / val / test split by area, so that val and test are ground the detector never saw.

    python -m lab.make_treecrowns                 # downloads the pinned wheel with pip; data/treecrowns
    python -m lab.make_treecrowns --wheel deepforest-2.1.0-py3-none-any.whl --out data/treecrowns

The images are the annotated examples that ship inside the ``deepforest==2.1.0`` wheel (NEON
airborne RGB at 10 cm, Pascal VOC boxes): the wheel is fetched with ``pip download --no-deps`` (never
installed or imported), its sha256 checked against the pinned one, and the images and annotations
read straight from it (a zip). Nothing of it is committed to this repository.

| image | size | crowns | train | val | test |
| --- | --- | --- | --- | --- | --- |
| 2019_YELL_2_528000_4978000_image_crop2 (Yellowstone) | 2299 x 2472 | 574 | rows 0-1832 | 1832-2152 | 2152-2472 |
| 2019_YELL_2_541000_4977000_image_crop (13 km away) | 1249 x 1035 | 279 | rows 0-395 | 395-715 | 715-1035 |
| OSBS_029 (Florida) | 400 x 400 | 61 | all | | |
| SOAP_061 (California; "Alive" and "Dead" both a tree) | 400 x 400 | 37 | all | | |

That is the default ``--layout area``: val and test are ground the detector never saw, at the
places it trains on. ``--layout sites`` holds a whole place out instead (train on the first
Yellowstone crop, OSBS and SOAP; val and test the west and east halves of the second crop), a
transfer to another place that FCOS learns far less well from this little data (docs/studies/treecrowns.md).

Every split is cut into ``tile`` x ``tile`` tiles: training tiles overlap (``train_stride`` apart,
so each crown is seen at several places in a tile), val and test tiles cover their region once (the
last row and column shifted to the edge). A crown cut by a tile's edge is annotated with its
visible part when at least half of its box is inside the tile, and otherwise marked ``iscrowd``:
evaluation ignores detections on it, training skips it. Boxes are the VOC corner coordinates as
DeepForest reads them (x from ``xmin`` to ``xmax``).

Layout under ``--out``: ``manifest.json`` (source wheel, its sha256 and the tiling), ``train/``,
``val/``, ``test/`` (PNG tiles), ``annotations/instances_{train,val,test}.json``. A folder whose
manifest records the same source and tiling is left as it is.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dwdet.utils.wheels import PinnedWheel

WHEEL = "deepforest-2.1.0-py3-none-any.whl"
WHEEL_REQUIREMENT = "deepforest==2.1.0"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
DATA_DIR = "deepforest/data/"
VERSION = 1
CATEGORY = {"id": 1, "name": "tree", "supercategory": "plant"}
MIN_VISIBLE = 0.5  # a cut crown with less of its box inside a tile is iscrowd there
MIN_SIDE = 2  # pixels: a visible part thinner than this is iscrowd whatever its fraction


@dataclass(frozen=True)
class Region:
    """The part of one annotated image (``stem``.png and ``stem``.xml in the wheel) that goes to a
    split: the pixels from (x0, y0) to (x1, y1), None being the image's right or bottom edge."""
    stem: str
    x0: int = 0
    y0: int = 0
    x1: int | None = None
    y1: int | None = None


YELL_A = "2019_YELL_2_528000_4978000_image_crop2"  # 2299 x 2472, 574 crowns
YELL_B = "2019_YELL_2_541000_4977000_image_crop"  # 1249 x 1035, 279 crowns, 13 km away
LAYOUTS = {
    # val and test: one 320 px strip across the bottom of each Yellowstone image, ground that the
    # detector never saw at the places it trains on
    "area": {
        "train": (Region(YELL_A, y1=1832), Region(YELL_B, y1=395), Region("OSBS_029"), Region("SOAP_061")),
        "val": (Region(YELL_A, y0=1832, y1=2152), Region(YELL_B, y0=395, y1=715)),
        "test": (Region(YELL_A, y0=2152), Region(YELL_B, y0=715)),
    },
    # val and test: the two halves of a place not trained on (a harder transfer: see docs/studies/treecrowns.md)
    "sites": {
        "train": (Region(YELL_A), Region("OSBS_029"), Region("SOAP_061")),
        "val": (Region(YELL_B, x1=624),),
        "test": (Region(YELL_B, x0=624),),
    },
}


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Offsets of the tiles along a side of ``length`` pixels: every ``stride``, and a last one
    flush with the end; one tile of the whole side where it is shorter than ``tile``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def cut_boxes(boxes: list[tuple[float, float, float, float]], x0: int, y0: int, width: int, height: int):
    """The ``boxes`` (x1, y1, x2, y2) seen through the window at (x0, y0) of ``width`` x ``height``,
    in the window's pixels: ``(kept, crowd)``, the boxes with at least ``MIN_VISIBLE`` of their area
    inside, clipped to it, and the other boxes that reach into it, clipped too."""
    kept, crowd = [], []
    for bx1, by1, bx2, by2 in boxes:
        cx1, cy1 = max(bx1, x0), max(by1, y0)
        cx2, cy2 = min(bx2, x0 + width), min(by2, y0 + height)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        clipped = (cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0)
        visible = (cx2 - cx1) * (cy2 - cy1) / ((bx2 - bx1) * (by2 - by1))
        thin = min(cx2 - cx1, cy2 - cy1) < MIN_SIDE
        (kept if visible >= MIN_VISIBLE and not thin else crowd).append(clipped)
    return kept, crowd


def read_voc(xml_text: bytes, source: str) -> list[tuple[float, float, float, float]]:
    """The boxes of a Pascal VOC annotation, (xmin, ymin, xmax, ymax); every object is a tree."""
    try:
        root = ElementTree.fromstring(xml_text)
        boxes = [tuple(float(obj.find(f"bndbox/{key}").text) for key in ("xmin", "ymin", "xmax", "ymax"))
                 for obj in root.iter("object")]
    except (ElementTree.ParseError, AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"{source}: not a Pascal VOC annotation with a bndbox per object ({error})") from None
    bad = [b for b in boxes if not (b[2] > b[0] and b[3] > b[1])]
    if bad:
        raise ValueError(f"{source}: boxes without area (xmax <= xmin or ymax <= ymin): {bad[:3]}")
    return boxes


def tile_split(wheel: zipfile.ZipFile, regions, out: Path, split: str, tile: int, stride: int) -> dict:
    """Write the tiles of ``regions`` under ``out/split`` and return the split's COCO dict."""
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for region in regions:
        png, xml = f"{DATA_DIR}{region.stem}.png", f"{DATA_DIR}{region.stem}.xml"
        missing = [name for name in (png, xml) if name not in wheel.namelist()]
        if missing:
            raise FileNotFoundError(f"{wheel.filename} has no {' nor '.join(missing)}")
        image = Image.open(io.BytesIO(wheel.read(png))).convert("RGB")
        boxes = read_voc(wheel.read(xml), xml)
        left, top = region.x0, region.y0
        right, bottom = region.x1 or image.width, region.y1 or image.height
        if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
            raise ValueError(f"{region} is not inside {region.stem}.png ({image.width} x {image.height})")
        step = stride if split == "train" else tile
        width, height = min(tile, right - left), min(tile, bottom - top)
        for y0 in (top + t for t in tile_starts(bottom - top, tile, step)):
            for x0 in (left + t for t in tile_starts(right - left, tile, step)):
                kept, crowd = cut_boxes(boxes, x0, y0, width, height)
                image_id = len(images) + 1
                file_name = f"{region.stem}_{x0}_{y0}.png"
                image.crop((x0, y0, x0 + width, y0 + height)).save(out / split / file_name, format="PNG")
                images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
                for (x1, y1, x2, y2), iscrowd in [(b, 0) for b in kept] + [(b, 1) for b in crowd]:
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                        "iscrowd": iscrowd})
    return {"info": {"description": "tree crowns (deepforest 2.1.0 example data), tiled", "split": split},
            "licenses": [], "images": images, "annotations": annotations, "categories": [CATEGORY]}


def build(wheel_path: Path, out: Path, tile: int = 320, train_stride: int = 160, splits: dict = LAYOUTS["area"],
          expected_sha256: str = WHEEL_SHA256) -> bool:
    """Tile the wheel's images into ``out`` unless its manifest records this exact build; True if
    it wrote anything. The folder is written beside ``out`` and renamed into place."""
    if not 0 < train_stride <= tile:
        raise ValueError(f"train_stride must be in (0, tile={tile}], got {train_stride}")
    PinnedWheel(WHEEL_REQUIREMENT, WHEEL, expected_sha256).verify(wheel_path)
    # the generator named as it was when it first wrote the folders: they still match
    manifest = {"generator": "tools/make_treecrowns.py", "version": VERSION, "source": WHEEL,
                "sha256": expected_sha256, "tile": tile, "train_stride": train_stride,
                "splits": {name: [vars(r) for r in regions] for name, regions in splits.items()}}
    try:
        if json.loads((out / "manifest.json").read_text()) == manifest:
            return False
    except (OSError, ValueError):
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty and holds no treecrowns manifest.json: refusing to "
                                  "overwrite it") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        (staging / "annotations").mkdir()
        with zipfile.ZipFile(wheel_path) as wheel:
            for split, regions in splits.items():
                coco = tile_split(wheel, regions, staging, split, tile, train_stride)
                (staging / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
                crowns = sum(1 for a in coco["annotations"] if not a["iscrowd"])
                print(f"{split}: {len(coco['images'])} tiles, {crowns} crowns")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help=f"{WHEEL} already downloaded (default: pip download it into "
                                                   "the --cache folder)")
    parser.add_argument("--cache", type=Path, default=Path("data/downloads"), help="where the wheel is kept")
    parser.add_argument("--out", type=Path, default=Path("data/treecrowns"))
    parser.add_argument("--layout", choices=LAYOUTS, default="area",
                        help="area: val and test are strips of the training places the detector never saw; "
                             "sites: they are another place (a harder transfer)")
    parser.add_argument("--tile", type=int, default=320, help="tile side, pixels")
    parser.add_argument("--train-stride", type=int, default=160, help="pixels between training tiles")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.wheel is None:
            args.cache.mkdir(parents=True, exist_ok=True)
            args.wheel = PinnedWheel(WHEEL_REQUIREMENT, WHEEL, WHEEL_SHA256).fetch(args.cache)
        wrote = build(args.wheel, args.out, args.tile, args.train_stride, LAYOUTS[args.layout])
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"make_treecrowns: {error}") from None
    print(f"{args.out}: {'written' if wrote else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
