"""What DW's assignment sees for a trained model: statistics of the candidate bags over a dataset.

    python tools/assign_stats.py work_dirs/compare/dw/seed0 work_dirs/compare/fcos/seed0 [--split val]

Each argument is a run folder (its config.json and last.pth are read). Whatever loss the run
trained with, the bags and weights are DW's default (released) ones, so that models trained
differently are measured alike. Per run, over the GTs of the dataset:

    bag        fraction of GTs with at least one point strictly inside (the others get no positive)
    best IoU   mean over GTs of the best IoU of a bag point's predicted box
    top IoU    mean over GTs of the IoU of the box the detector ranks first among its bag points
               (the highest joint score s for the GT's class): what it keeps, against what it has
    IoU>=0.5   fraction of GTs whose best bag IoU reaches 0.5 (below it, P_neg is 1 for every
               pair of the bag: all its points are pushed towards background at full weight)
    P_neg=1    fraction of all bag pairs whose score entry has P_neg = 1
    score      mean over GTs of the joint score s of the bag point with the largest w_pos
    w_pos s8   the share of all w_pos (summed over the dataset's bag pairs) on the finest level's
               points: how much of DW's positive weight the coarser levels take
    shared     fraction of bag pairs whose point lies in the bags of two or more GTs (its scores
               are a positive for each GT's class and a negative in the others' bags)

and of the scores s = sigmoid(cls) sigmoid(ctr) the detector ranks its detections by:

    ctr bg     mean sigmoid(centerness) of the points outside every box
    ctr in     mean sigmoid(centerness) of the points inside a box
    s>0.05     (point, class) pairs per image scoring above 0.05 (the detector's score_thresh),
    right, wrong, bg   split into the class of a box the point is inside, another class at a
               point inside a box, and points outside every box
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import torch  # noqa: E402

import dw_ops  # noqa: E402
from dwdet.utils.io import write_json  # noqa: E402
from dwdet.engine import CheckpointError, builders  # noqa: E402
from dwdet.engine.runtime import environment_record  # noqa: E402
from dwdet.losses import DWLoss  # noqa: E402
from dwdet.models import FCOSDetector  # noqa: E402

COLUMNS = ("gts", "bag", "best IoU", "top IoU", "IoU>=0.5", "P_neg=1", "score", "w_pos s8", "shared", "ctr bg", "ctr in",
           "s>0.05", "right", "wrong", "bg")


@torch.no_grad()
def bag_stats(model: FCOSDetector, dataset, loss: DWLoss, max_images: int | None = None) -> dict[str, float]:
    """The statistics of the module docstring for ``model`` over ``dataset`` (image, target) pairs."""
    model.eval()
    has_bag, best_iou, top_iou, best_score, pneg_one, pairs, shared = [], [], [], [], 0, 0, 0
    w_pos_finest, w_pos_all = 0.0, 0.0
    ctr_bg, ctr_in, above, measured = [], [], {"right": 0, "wrong": 0, "bg": 0}, 0
    for index in range(min(len(dataset), max_images or len(dataset))):
        image, target = dataset[index]
        if len(target["boxes"]) == 0:
            continue
        measured += 1
        batch = model.training_batch([image], [{"boxes": target["boxes"].float(), "labels": target["labels"]}])
        a = loss.assign(batch)
        bag, labels, boxes = a.bag, batch.labels, batch.gt_boxes
        score = dw_ops.pair_scores(bag, batch.cls, batch.objectness, labels)
        inside = ((batch.points[:, None] > boxes[None, :, :2]) & (batch.points[:, None] < boxes[None, :, 2:])).all(2)
        in_any = inside.any(1)  # (P,) of (P, G)
        ctr_prob = batch.objectness[0].sigmoid()
        ctr_bg += ctr_prob[~in_any].tolist()
        ctr_in += ctr_prob[in_any].tolist()
        point, klass = torch.nonzero(batch.cls[0].sigmoid() * ctr_prob[:, None] > model.score_thresh, as_tuple=True)
        right = (inside[point] & (labels[None, :] == klass[:, None])).any(1)
        above["right"] += int(right.sum())
        above["wrong"] += int((in_any[point] & ~right).sum())
        above["bg"] += int((~in_any[point]).sum())
        entries = dw_ops.pair_entry_index(bag, labels, batch.num_points, batch.num_classes)
        pneg_one += int((a.w_neg[torch.searchsorted(a.neg_index, entries)] == 1).sum())
        pairs += len(score)
        finest = batch.strides[bag.point_index] == min(batch.level_strides)
        w_pos_finest += float(a.w_pos[finest].sum())
        w_pos_all += float(a.w_pos.sum())
        shared += int((torch.bincount(bag.point_index)[bag.point_index] > 1).sum())
        for g in range(len(labels)):
            lo, hi = bag.gt_offsets[g], bag.gt_offsets[g + 1]
            has_bag.append(float(hi > lo))
            best_iou.append(float(bag.iou[lo:hi].max()) if hi > lo else 0.0)
            top_iou.append(float(bag.iou[lo:hi][score[lo:hi].argmax()]) if hi > lo else 0.0)
            if hi > lo:
                best_score.append(float(score[lo:hi][a.w_pos[lo:hi].argmax()]))
    if not has_bag:
        raise ValueError("the dataset has no boxes")
    return {"gts": len(has_bag), "bag": statistics.fmean(has_bag), "best IoU": statistics.fmean(best_iou),
            "top IoU": statistics.fmean(top_iou),
            "IoU>=0.5": statistics.fmean(float(x >= 0.5) for x in best_iou),
            "P_neg=1": pneg_one / max(pairs, 1),
            "score": statistics.fmean(best_score) if best_score else float("nan"),
            "w_pos s8": w_pos_finest / w_pos_all if w_pos_all > 0 else float("nan"),
            "shared": shared / max(pairs, 1),
            "ctr bg": statistics.fmean(ctr_bg) if ctr_bg else float("nan"),
            "ctr in": statistics.fmean(ctr_in) if ctr_in else float("nan"),
            "s>0.05": sum(above.values()) / measured, **{k: v / measured for k, v in above.items()}}


def run_stats(run: Path, split: str, max_images: int | None, trained_weights: bool = False) -> dict[str, float]:
    try:
        model, cfg, dataset = builders.load_run(run, split, trained_weights=trained_weights)
    except CheckpointError as error:
        raise SystemExit(str(error)) from None
    return bag_stats(model, dataset, DWLoss(cfg.model.num_classes), max_images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders written by tools/train.py")
    parser.add_argument("--split", choices=("train", "val"), default="val")
    parser.add_argument("--max-images", type=int, default=None, help="measure only the first images")
    parser.add_argument("--json", help="also write the statistics here, with the environment (revision, CPU, command)")
    parser.add_argument("--trained-weights", action="store_true",
                        help="for the runs trained with train.ema: their trained weights, not their average "
                             "(the others have only their trained weights)")
    args = parser.parse_args(argv)
    results = {run: run_stats(Path(run), args.split, args.max_images, args.trained_weights) for run in args.runs}
    print("| run | " + " | ".join(COLUMNS) + " |\n" + "| --- " * (len(COLUMNS) + 1) + "|")
    for run, stats in results.items():
        print(f"| {run} | {stats['gts']} | " + " | ".join(f"{stats[k]:.3f}" for k in COLUMNS[1:11])
              + " | " + " | ".join(f"{stats[k]:.0f}" for k in COLUMNS[11:]) + " |")
    if args.json:  # written elsewhere, said where, if args.json cannot be written
        write_json({"environment": environment_record(), "split": args.split, "max_images": args.max_images,
                    "trained_weights": args.trained_weights, "runs": results}, args.json, indent=1)


if __name__ == "__main__":
    main()
