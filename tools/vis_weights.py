"""Where a trained model's positive and negative weights fall around one object (figure 5 of the
DW paper): heat maps over the FPN levels of the cls score, the IoU, and w_pos / w_neg under DW and
under the GFL and VFL formulas of the paper's table 1, side by side.

    python tools/vis_weights.py configs/compare_r18_synthetic.py work_dirs/compare/dw/seed0/last.pth \\
        --index 3 --out weights.png

The image is the ``--index``-th of the config's ``--split`` set; the object is its ``--gt``-th
box (default: the largest). Maps cover the object's candidate bag (the points inside its box) on
every level that has any, cropped around the box; points outside the bag are blank. For a point p
of the bag with joint score s (cls x centerness of the object's class) and t = IoU of its box:

    DW   w_pos = the released (or, with loss.variant=paper, the paper's) positive weight of p for
               this object; w_neg = P_neg * s^gamma2 (P_neg and I_neg of eqs. 5-8)
    GFL  w_pos = (s - t)^2 t          w_neg = (s - t)^2 (1 - t)
    VFL  w_pos = t t                  w_neg = t (1 - t)
"""
from __future__ import annotations

import argparse
from typing import Dict, List

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dwdet.config import load_config  # noqa: E402
from dwdet.cli.common import add_print_config, print_config  # noqa: E402
from dwdet.engine import builders  # noqa: E402
from dwdet.losses import DWLoss  # noqa: E402
from dwdet.models import FCOSDetector  # noqa: E402

PANELS = ("score", "iou", "dw_pos", "dw_neg", "gfl_pos", "gfl_neg", "vfl_pos", "vfl_neg")
TITLES = {"score": "cls score s", "iou": "IoU t", "dw_pos": "DW w_pos", "dw_neg": "DW w_neg",
          "gfl_pos": "GFL w_pos", "gfl_neg": "GFL w_neg", "vfl_pos": "VFL w_pos", "vfl_neg": "VFL w_neg"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (.py, or a run's config.json)")
    parser.add_argument("checkpoint", help="a checkpoint written by tools/train.py")
    parser.add_argument("--split", choices=("train", "val"), default="val", help="dataset of the config to draw from")
    parser.add_argument("--index", type=int, default=0, help="image index in that dataset")
    parser.add_argument("--gt", type=int, default=None, help="box index in the image (default: the largest)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="config overrides")
    parser.add_argument("--out", default="weights.png", help="the PNG to write")
    add_print_config(parser)
    return parser.parse_args(argv)


def pair_weights(score: Tensor, iou: Tensor, dw_pos: Tensor, dw_neg_prob: Tensor, gamma2: float) -> Dict[str, Tensor]:
    """Every panel's value for a set of bag pairs (table 1 of the paper, and DW)."""
    return {"score": score, "iou": iou,
            "dw_pos": dw_pos, "dw_neg": dw_neg_prob * score.pow(gamma2),
            "gfl_pos": (score - iou).square() * iou, "gfl_neg": (score - iou).square() * (1 - iou),
            "vfl_pos": iou * iou, "vfl_neg": iou * (1 - iou)}


@torch.no_grad()
def weight_maps(model: FCOSDetector, image: Tensor, target: Dict[str, Tensor], gt: int
                ) -> tuple[List[Dict[str, Tensor]], Tensor]:
    """Per FPN level, (H, W) maps of every panel for box ``gt`` of ``target`` (NaN outside its
    bag), and that box in the pixels of the resized image the maps are over.

    ``image`` is (3, H, W) in [0, 1] and ``target`` holds its ``boxes`` (G, 4) and ``labels``; the
    weights are the model's loss's (a :class:`dwdet.losses.DWLoss`), computed on the whole image
    so that the per-object normalisation of w_pos is the one training sees."""
    loss = model.loss
    if not isinstance(loss, DWLoss):
        raise ValueError("the model's loss must be a DWLoss (config key loss.type='dw') to compute DW weights")
    if not 0 <= gt < len(target["boxes"]):
        raise ValueError(f"--gt {gt} is out of range: the image has {len(target['boxes'])} boxes")
    model.eval()
    batch, targets = model.transform([image], [{"boxes": target["boxes"].float(), "labels": target["labels"]}])
    head = model.head(list(model.backbone(batch.tensors).values()))
    a = loss.assign(*head, targets)
    mine = a.bag.gt_index == gt
    values = pair_weights(a.score[mine], a.bag.iou[mine], a.weights.pos_weight[mine],
                          a.weights.pair_neg_prob[mine], loss.gamma2)
    sizes = [tuple(x.shape[-2:]) for x in head[0]]
    maps = [{} for _ in sizes]
    for name, v in values.items():
        flat = torch.full((a.cls.shape[1],), float("nan")).index_put_((a.bag.point_index[mine],), v.float().cpu())
        for level_maps, level, (height, width) in zip(maps, flat.split([h * w for h, w in sizes]), sizes):
            level_maps[name] = level.reshape(height, width)
    return maps, targets[0]["boxes"][gt].cpu()


def crop_box(box: Tensor, stride: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of a level map around ``box`` (x1, y1, x2, y2 pixels), with a half-box margin."""
    x1, y1, x2, y2 = box.tolist()
    mx, my = (x2 - x1) / 2, (y2 - y1) / 2

    def span(lo: float, hi: float, size: int) -> slice:
        first, last = max(0, int(lo // stride)), min(size, int(hi // stride) + 1)
        return slice(first, max(last, first + 1))

    return span(y1 - my, y2 + my, shape[0]), span(x1 - mx, x2 + mx, shape[1])


def plot_maps(image: Tensor, box: Tensor, maps: List[Dict[str, Tensor]], map_box: Tensor, strides: tuple,
              out: str, title: str) -> None:
    """``box`` is in ``image``'s pixels, ``map_box`` in those of the input the maps are over."""
    levels = [(i, m) for i, m in enumerate(maps) if not torch.isnan(m["score"]).all()]
    fig, axes = plt.subplots(len(levels), len(PANELS) + 1, figsize=(1.9 * (len(PANELS) + 1), 1.9 * len(levels) + 0.6),
                             squeeze=False)
    scales = {name: max(1e-12, max(float(torch.nan_to_num(m[name], nan=0.0).max()) for _, m in levels))
              for name in PANELS}  # one colour scale per column, across levels
    for row, (level, level_maps) in zip(axes, levels):
        row[0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        x1, y1, x2, y2 = box.tolist()
        row[0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
        row[0].set_ylabel(f"P{level + 3} (stride {strides[level]})", fontsize=8)
        rows, cols = crop_box(map_box, strides[level], tuple(level_maps["score"].shape))
        for ax, name in zip(row[1:], PANELS):
            ax.imshow(level_maps[name][rows, cols].numpy(), cmap="viridis", vmin=0, vmax=scales[name])
            ax.set_title(TITLES[name], fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    if args.print_config:
        print_config(cfg)
        return
    if cfg.loss.type != "dw" or cfg.model.get("type", "fcos") != "fcos":
        raise SystemExit(f"{args.config}: the DW weights need our detector with loss.type='dw' "
                         f"(got model.type={cfg.model.get('type', 'fcos')!r}, loss.type={cfg.loss.type!r})")
    dataset = builders.build_dataset(cfg, args.split)
    model, _, _ = builders.load_detector(args.checkpoint, cfg=cfg, categories=getattr(dataset, "categories", None))
    if not 0 <= args.index < len(dataset):
        raise SystemExit(f"--index {args.index} is out of range: the {args.split} set has {len(dataset)} images")
    image, target = dataset[args.index]
    if len(target["boxes"]) == 0:
        raise SystemExit(f"image {args.index} of the {args.split} set has no boxes; pick another --index")
    boxes = target["boxes"]
    gt = args.gt if args.gt is not None else int(((boxes[:, 2:] - boxes[:, :2]).prod(dim=1)).argmax())
    maps, map_box = weight_maps(model, image, target, gt)
    label = int(target["labels"][gt])
    plot_maps(image, boxes[gt], maps, map_box, tuple(model.loss.strides), args.out,
              f"{args.checkpoint}: {args.split} image {args.index}, box {gt} (label {label}); "
              f"colour scale per column, blank = outside the candidate bag")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
