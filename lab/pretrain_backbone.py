"""Pretrain a backbone on the synthetic benchmark's objects (the stand-in for ImageNet weights).

    OMP_NUM_THREADS=1 python -m lab.pretrain_backbone --out weights/resnet10_shapes80.pth   # shapes80's
    python -m lab.pretrain_backbone --steps 2200 --out weights/resnet10_shapes80_long.pth  # the demo's
    python -m lab.pretrain_backbone --arch resnet18 --steps 3000 --out my_r18.pth

The classifier learns shape x hue (80 classes with ``--colours 10``; pattern x hue with
``--patterns``) and background from crops drawn
like the benchmark's images; the file it writes goes into ``model.backbone_weights`` of a config
with ``model.backbone_norm="frozen_bn"``. See lab/pretrain.py.
"""
from __future__ import annotations

import argparse
import hashlib
import sys

from lab.pretrain import PretrainConfig, pretrain_backbone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the backbone file to write (.pth)")
    parser.add_argument("--arch", default=defaults.arch, help="resnet10, resnet18, resnet34, resnet50, ...")
    parser.add_argument("--colours", type=int, default=defaults.data["colours"],
                        help="hue classes of the look (0: shape classes only, any colour)")
    parser.add_argument("--patterns", action="store_true",
                        help="the classes are fill pattern x hue (data.params.patterns of the detector's config)")
    parser.add_argument("--crop-size", type=int, default=defaults.crop_size)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--val-crops", type=int, default=defaults.val_crops)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    for name in ("crop_size", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # "patterns" only when set, so that the files of the shape-class commands stay byte-identical
    look = {"colours": args.colours, **({"patterns": True} if args.patterns else {})}
    config = PretrainConfig(arch=args.arch, data=look, crop_size=args.crop_size,
                            steps=args.steps, batch_size=args.batch_size, lr=args.lr, val_crops=args.val_crops,
                            seed=args.seed)
    pretrain_backbone(args.out, config, log=lambda line: print(line, flush=True))
    with open(args.out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {args.out} (sha256 {digest})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
