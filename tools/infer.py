"""Detect objects in images: COCO results JSON plus a PNG per image with the boxes drawn.

    python tools/infer.py configs/dw_r50_fpn_1x_coco.py work_dirs/dw/epoch_12.pth demo/ photo.jpg \\
        --out-dir out/ --score-thr 0.3

Category ids and names come from the config's validation set, or from ``--categories`` (a COCO
annotation file; its categories sorted by id give labels 0, 1, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms.functional import pil_to_tensor, to_pil_image  # noqa: E402
from torchvision.utils import draw_bounding_boxes  # noqa: E402

from dwdet.config import load_config  # noqa: E402
from dwdet.engine import builders, load_checkpoint  # noqa: E402
from dwdet.engine.evaluation import detections_to_coco  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (.py, or a run's config.json)")
    parser.add_argument("checkpoint", help="a checkpoint written by tools/train.py")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="config overrides")
    parser.add_argument("--out-dir", default="infer_out", help="where results.json and the PNGs go")
    parser.add_argument("--score-thr", type=float, default=0.3, help="lowest score drawn (JSON keeps all)")
    parser.add_argument("--categories", help="COCO json whose categories name the labels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the options


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


def load_categories(cfg, path: str | None) -> list[dict]:
    if path is None:
        return builders.val_categories(cfg)
    with open(path) as f:
        return sorted(json.load(f)["categories"], key=lambda c: c["id"])


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = list_images(args.inputs)
    cfg = load_config(args.config, args.opts)
    device = torch.device(args.device)
    model = builders.build_model(cfg)
    model.load_state_dict(load_checkpoint(args.checkpoint)["model"])
    model.to(device).eval()
    categories = load_categories(cfg, args.categories)
    category_ids = [c["id"] for c in categories]
    os.makedirs(args.out_dir, exist_ok=True)

    results = []
    for image_id, path in enumerate(paths):
        with Image.open(path) as image:
            pixels = pil_to_tensor(image.convert("RGB"))
        detections = model([pixels.to(device).float() / 255])[0]
        entries = detections_to_coco(image_id, detections, category_ids)
        results += [{**entry, "file_name": str(path)} for entry in entries]
        keep = detections["scores"] >= args.score_thr
        labels = [f"{categories[int(label)]['name']} {float(score):.2f}"
                  for label, score in zip(detections["labels"][keep], detections["scores"][keep])]
        drawn = draw_bounding_boxes(pixels, detections["boxes"][keep].cpu(), labels=labels, colors="red", width=2)
        to_pil_image(drawn).save(os.path.join(args.out_dir, f"{image_id:05d}_{path.stem}.png"))
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f)
    print(f"{len(results)} detections on {len(paths)} images written to {args.out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
