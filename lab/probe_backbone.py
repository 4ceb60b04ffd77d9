"""Judge backbone files by how well their frozen features classify a config's objects, on the
detector's own images (a linear probe at each object's box centre; see lab/probe.py).

    python -m lab.probe_backbone configs/lab/dw_r10_shapes80.py weights/resnet10_shapes80.pth \\
        weights/resnet10_shapes80_long.pth none                  # none: random initialisation

The probe is fitted on the objects of the config's training images and scored on its validation
images' objects, resized as the model resizes them. It prints one JSON line per backbone:
top-1, top-1 by COCO size range and, on a shape x hue synthetic set, the shape and hue alone.
"""
from __future__ import annotations

import argparse
import json
import sys

from torch.utils.data import Subset

from dwdet.config import load_config
from dwdet.data import CocoDetection
from dwdet.engine.builders import split_files
from dwdet.models.transform import DetectionTransform
from lab.probe import probe_backbone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the detector config whose data, backbone and input size are probed")
    parser.add_argument("weights", nargs="+", help="backbone files (lab/pretrain_backbone.py), or none")
    parser.add_argument("--max-train-images", type=int, default=None, help="probe-training images (default all)")
    parser.add_argument("--max-val-images", type=int, default=None, help="probe-scoring images (default all)")
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="L2 factor of the probe")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    train, val = (CocoDetection(*split_files(cfg, split), filter_empty=True) for split in ("train", "val"))
    train = Subset(train, range(min(len(train), args.max_train_images or len(train))))
    val = Subset(val, range(min(len(val), args.max_val_images or len(val))))
    colours = cfg.data.params.get("colours", 0) if cfg.data.type == "synthetic" else 0
    num_classes = cfg.model.num_classes
    if num_classes is None:
        raise ValueError(f"config {args.config}: model.num_classes must be set to probe its backbone")
    transform = DetectionTransform(cfg.model.min_size, cfg.model.max_size, cfg.model.test_min_size)
    for weights in args.weights:
        result = probe_backbone(cfg.model.backbone, None if weights == "none" else weights, train, val,
                                num_classes, transform, colours=colours, weight_decay=args.weight_decay)
        print(json.dumps({"weights": weights, **{k: round(v, 4) if isinstance(v, float) else v
                                                 for k, v in result.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
