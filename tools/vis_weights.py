"""The classification weights that trained detectors actually give around one object (figure 5 of
the DW paper), one row per method, side by side.

    python tools/vis_weights.py work_dirs/compare/{fcos,atss,gfl,vfl,tood,dw}/seed0 --index 1 --out weights.png

Each argument is a run folder of tools/train.py (its ``config.json`` and ``--checkpoint``,
default ``last.pth``); the image is the ``--index``-th of the first run's ``--split`` set and the
object its ``--gt``-th box (default: the largest). Every run's own loss (its config's
``loss.type``) assigns the image with the run's own predictions, exactly as in training.

Table 1 of the paper writes every classification loss at a score entry as
``-w_pos log(s) - w_neg log(1 - s)``; the panels show w_pos and w_neg at the object's class for
each point of the levels whose points fall inside the box, cropped around it. w_pos is the
object's own (a point assigned to another object shows 0); w_neg is the entry's, whatever claims
it. With s the score the loss supervises (sigmoid(cls) for FCOS and ATSS, the joint score
sigmoid(cls) sigmoid(objectness) for the others), q the IoU of the point's box with the object and
t^ TOOD's normalised alignment:

    FCOS, ATSS  positive: w_pos = alpha (1 - s)^gamma    elsewhere: w_neg = (1 - alpha) s^gamma
    GFL         positive: w_pos = |q - s|^2 q,  w_neg = |q - s|^2 (1 - q)   elsewhere: w_neg = s^2
    VFL         positive: w_pos = q q,  w_neg = q (1 - q)                   elsewhere: w_neg = alpha s^gamma
    TOOD        as GFL with t^ in place of q
    DW          in the bag: w_pos = the pair's positive weight, w_neg = P_neg s^gamma2;  elsewhere s^gamma2
                (times 1 - alpha with loss.variant=paper); in the bag, the loss's neg_weighting (table 5)

Each loss gives its own weights (its ``classification_weights``, tested against its loss term).
The losses' normalisers (number of positives, sum of t^, number of objects) are not applied.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dwdet.cli.common import add_print_config, print_config  # noqa: E402
from dwdet.engine import CheckpointError, builders  # noqa: E402
from dwdet.losses import Batch, PointLoss  # noqa: E402
from dwdet.models import FCOSDetector  # noqa: E402


class Run(NamedTuple):
    name: str
    model: FCOSDetector


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders of tools/train.py (config.json and a checkpoint)")
    parser.add_argument("--checkpoint", default="last.pth", help="checkpoint file name inside each run folder")
    parser.add_argument("--split", choices=("train", "val"), default="val", help="dataset of the config to draw from")
    parser.add_argument("--index", type=int, default=0, help="image index in that dataset")
    parser.add_argument("--gt", type=int, default=None, help="box index in the image (default: the largest)")
    parser.add_argument("--levels", type=int, default=3,
                        help="at most this many FPN levels (the finest with points in the box)")
    parser.add_argument("--out", default="weights.png", help="the PNG to write")
    add_print_config(parser)
    return parser.parse_args(argv)


@torch.no_grad()
def point_weights(loss: PointLoss, batch: Batch, gt: int) -> Dict[str, Tensor]:
    """(P,) w_pos and w_neg at object ``gt``'s class in the first image of ``batch``, and the score
    the loss supervises, from the loss's own assignment and :meth:`classification_weights`."""
    a = loss.assign(batch)
    weights = loss.classification_weights(batch, a)
    label = int(batch.labels[gt])
    mine = a.bag.gt_index[a.pairs] == gt
    w_pos = weights.score.new_zeros(batch.num_points).index_put_((a.bag.point_index[a.pairs][mine],),
                                                                 weights.w_pos[mine])
    return {"score": weights.score[0, :, label], "w_pos": w_pos, "w_neg": weights.w_neg[0, :, label]}


@torch.no_grad()
def weight_maps(model: FCOSDetector, image: Tensor, target: Dict[str, Tensor], gt: int
                ) -> tuple[List[Dict[str, Tensor]], Tensor]:
    """Per FPN level, (H, W) maps of ``score``, ``w_pos`` and ``w_neg`` (see :func:`point_weights`)
    for box ``gt`` of ``target`` under the model's own loss, and that box in the pixels of the
    resized image the maps are over. ``image`` is (3, H, W) in [0, 1]; the weights are computed
    on the whole image, with all its boxes, as training sees them."""
    if model.loss is None:
        raise ValueError("the model has no loss: build it from its training config to see its weights")
    if not 0 <= gt < len(target["boxes"]):
        raise ValueError(f"--gt {gt} is out of range: the image has {len(target['boxes'])} boxes")
    model.eval()
    batch = model.training_batch([image], [{"boxes": target["boxes"].float(), "labels": target["labels"]}])
    values = point_weights(model.loss, batch, gt)
    sizes = batch.level_shapes
    maps = [{} for _ in sizes]
    for name, v in values.items():
        for level_maps, level, (height, width) in zip(maps, v.float().cpu().split([h * w for h, w in sizes]), sizes):
            level_maps[name] = level.reshape(height, width)
    return maps, batch.gt_boxes[gt].cpu()


def crop_box(box: Tensor, stride: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of a level map around ``box`` (x1, y1, x2, y2 pixels), with a half-box margin."""
    x1, y1, x2, y2 = box.tolist()
    mx, my = (x2 - x1) / 2, (y2 - y1) / 2

    def span(lo: float, hi: float, size: int) -> slice:
        first, last = max(0, int(lo // stride)), min(size, int(hi // stride) + 1)
        return slice(first, max(last, first + 1))

    return span(y1 - my, y2 + my, shape[0]), span(x1 - mx, x2 + mx, shape[1])


def levels_in_box(box: Tensor, sizes: List[tuple[int, int]], strides: tuple, limit: int) -> List[int]:
    """The finest ``limit`` levels with a point strictly inside ``box``."""
    x1, y1, x2, y2 = box.tolist()
    found = []
    for level, ((height, width), s) in enumerate(zip(sizes, strides)):
        xs, ys = (torch.arange(width) + 0.5) * s, (torch.arange(height) + 0.5) * s
        if ((xs > x1) & (xs < x2)).any() and ((ys > y1) & (ys < y2)).any():
            found.append(level)
    return found[:limit]


def plot_runs(image: Tensor, box: Tensor, rows: List[tuple[str, List[Dict[str, Tensor]]]], map_box: Tensor,
              strides: tuple, levels: List[int], out: str, title: str) -> None:
    """One row per method: the image, then w_pos and w_neg on each of ``levels`` (own colour scale,
    its maximum in the title)."""
    columns = [(name, level) for name in ("w_pos", "w_neg") for level in levels]
    fig, axes = plt.subplots(len(rows), len(columns) + 1, figsize=(1.9 * (len(columns) + 1), 1.9 * len(rows) + 0.6),
                             squeeze=False)
    for row, (method, maps) in zip(axes, rows):
        row[0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        x1, y1, x2, y2 = box.tolist()
        row[0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
        row[0].set_ylabel(method, fontsize=9)
        for ax, (name, level) in zip(row[1:], columns):
            crop = maps[level][name][crop_box(map_box, strides[level], tuple(maps[level][name].shape))]
            top = float(crop.max())
            ax.imshow(crop.numpy(), cmap="viridis", vmin=0, vmax=max(top, 1e-12))
            ax.set_title(f"{name} P{level + 3} (max {top:.2g})", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def load_run(folder: str, checkpoint: str) -> tuple[Run, object]:
    path = Path(folder)
    try:
        model, cfg, _ = builders.load_run(path, "val", checkpoint)
    except CheckpointError as error:
        raise SystemExit(str(error)) from None
    return Run(f"{cfg.loss.type} ({path.parent.name}/{path.name})", model), cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = [load_run(folder, args.checkpoint) for folder in args.runs]
    if args.print_config:
        for _, cfg in runs:
            print_config(cfg)
        return
    dataset = builders.build_dataset(runs[0][1], args.split, training=False)  # the image as it is
    if not 0 <= args.index < len(dataset):
        raise SystemExit(f"--index {args.index} is out of range: the {args.split} set has {len(dataset)} images")
    image, target = dataset[args.index]
    if len(target["boxes"]) == 0:
        raise SystemExit(f"image {args.index} of the {args.split} set has no boxes; pick another --index")
    boxes = target["boxes"]
    gt = args.gt if args.gt is not None else int(((boxes[:, 2:] - boxes[:, :2]).prod(dim=1)).argmax())
    rows, map_box = [], None
    for run, _ in runs:
        maps, map_box = weight_maps(run.model, image, target, gt)
        rows.append((run.name, maps))
    strides = tuple(runs[0][0].model.head.strides)
    sizes = [tuple(m["score"].shape) for m in rows[0][1]]
    levels = levels_in_box(map_box, sizes, strides, args.levels)
    plot_runs(image, boxes[gt], rows, map_box, strides, levels, args.out,
              f"{args.split} image {args.index}, box {gt} (label {int(target['labels'][gt])}): "
              f"table 1's w_pos and w_neg at its class, unnormalised")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
