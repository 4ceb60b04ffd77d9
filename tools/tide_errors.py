"""What a trained detector's AP50 loses to each kind of error, by TIDE (Bolya et al., ECCV 2020;
the ``tidecv-light`` package).

    python tools/tide_errors.py work_dirs/a/fcos/seed0 work_dirs/a/dw/seed0 --split test --json record.json

Each run (its config.json and last.pth) is evaluated as its own evaluation runs it, and TIDE
sorts its detections at IoU 0.5 (background below IoU 0.1) into the six main errors, each given as
the AP50 that fixing it alone would add:

    Cls   the right place, the wrong class            Dupe  a second box on a found object
    Loc   the right class, a box of IoU 0.1-0.5       Bkg   a box on nothing
    Both  the wrong class and a loose box             Miss  an object without any box

and the two summaries ``FalsePos`` (every false positive removed) and ``FalseNeg`` (every object
found). With one class, Cls and Both are empty. As in COCO's evaluation, a box that fits no
object and lies at least half inside a crowd annotation is no error. The record keeps each run's
COCO metrics beside TIDE's, so that the AP50 TIDE explains can be checked against the run's own.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import torch  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from tidecv import TIDE, Data  # noqa: E402
from torchvision.ops import box_area, box_iou  # noqa: E402

from dwdet.engine import CheckpointError, builders  # noqa: E402
from dwdet.engine.evaluation import CocoEvaluator, evaluate  # noqa: E402
from dwdet.engine.loaders import eval_loader  # noqa: E402
from dwdet.engine.runtime import environment_record  # noqa: E402
from dwdet.utils.io import write_json  # noqa: E402

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SUMMARIES = ("FalsePos", "FalseNeg")


def tide_errors(coco_gt: COCO, results: list[dict], image_ids: list[int]) -> dict[str, float]:
    """TIDE's AP50 of ``results`` (COCO result entries on ``image_ids``) and the AP50 each error
    would add if fixed alone, in AP points (0-100). Boxes on images without an object are errors
    too: TIDE reads every image that has either."""
    truth, found = Data("ground truth"), Data("detections")
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids))
    for ann in anns:
        if not ann.get("iscrowd", 0):
            truth.add_ground_truth(ann["image_id"], ann["category_id"], _xyxy(ann["bbox"]))
    for entry in _outside_crowds(results, anns):
        found.add_detection(entry["image_id"], entry["category_id"], entry["score"], _xyxy(entry["bbox"]))
    run = TIDE(pos_threshold=0.5, background_threshold=0.1).evaluate(truth, found, mode=TIDE.BOX)
    errors = {error.short_name: value for error, value in run.fix_main_errors().items()}
    errors.update({error.short_name: value for error, value in run.fix_special_errors().items()})
    return {"AP50": run.ap, **{name: errors[name] for name in (*MAIN_ERRORS, *SUMMARIES)}}


def _xyxy(box: list[float]) -> list[float]:
    """A COCO box (x, y, w, h) as tidecv-light reads boxes: x1, y1, x2, y2."""
    x, y, w, h = box
    return [x, y, x + w, y + h]


def _outside_crowds(results: list[dict], anns: list[dict]) -> list[dict]:
    """The detections COCO's evaluation does not ignore at IoU 0.5 (tidecv-light's own ignore
    regions do not work for boxes): in score order, a box takes the free object of its class it
    fits best (IoU >= 0.5); one that takes none and lies at least half inside a crowd annotation
    of its class is dropped."""
    def boxes(entries: list[dict]) -> torch.Tensor:
        return torch.tensor([_xyxy(e["bbox"]) for e in entries], dtype=torch.float64).reshape(-1, 4)

    by_key, objects_by_key = defaultdict(list), defaultdict(list)
    for entry in results:
        by_key[(entry["image_id"], entry["category_id"])].append(entry)
    for ann in anns:
        objects_by_key[(ann["image_id"], ann["category_id"])].append(ann)
    kept = []
    for key, entries in by_key.items():
        mine = sorted(entries, key=lambda e: -e["score"])
        objects = objects_by_key[key]
        crowds = boxes([a for a in objects if a.get("iscrowd", 0)])
        if len(crowds) == 0:
            kept += mine
            continue
        dets = boxes(mine)
        fits = box_iou(dets, boxes([a for a in objects if not a.get("iscrowd", 0)]))
        inside = (torch.min(dets[:, None, 2:], crowds[None, :, 2:]) - torch.max(dets[:, None, :2], crowds[None, :, :2])
                  ).clamp(min=0).prod(-1).amax(1) / box_area(dets).clamp(min=1e-12)
        free = torch.ones(fits.shape[1], dtype=torch.bool)
        for entry, fit, half_inside in zip(mine, fits, (inside >= 0.5).tolist()):
            fit = torch.where(free, fit, -1.0)
            if len(fit) and fit.max() >= 0.5:
                free[fit.argmax()] = False
            elif half_inside:
                continue
            kept.append(entry)
    return kept


def run_errors(run: Path, split: str, trained_weights: bool = False) -> dict[str, dict]:
    """A run's COCO metrics on ``split`` and its TIDE errors there (``trained_weights``: see
    ``builders.load_run``)."""
    try:
        model, cfg, dataset = builders.load_run(run, split, trained_weights=trained_weights)
    except CheckpointError as error:
        raise SystemExit(str(error)) from None
    evaluator = CocoEvaluator(dataset.coco, dataset.cat_ids)
    metrics = evaluate(model, eval_loader(dataset, cfg.eval.batch_size, 0), evaluator, torch.device("cpu"),
                       cfg.train.amp, verbose=False)
    image_ids, results = evaluator.gather()
    return {"coco": metrics, "tide": tide_errors(dataset.coco, results, image_ids)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders written by tools/train.py")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val")
    parser.add_argument("--json", help="also write the errors here, with the environment (revision, CPU, command)")
    parser.add_argument("--trained-weights", action="store_true",
                        help="for the runs trained with train.ema: their trained weights, not their average")
    args = parser.parse_args(argv)
    errors = {run: run_errors(Path(run), args.split, args.trained_weights) for run in args.runs}
    columns = ("AP50", *MAIN_ERRORS, *SUMMARIES)
    print("| run | COCO AP50 | " + " | ".join(columns) + " |")
    print("| --- " * (2 + len(columns)) + "|")
    for run, found in errors.items():
        print(f"| {run} | {100 * found['coco']['AP50']:.1f} | "
              + " | ".join(f"{found['tide'][name]:.1f}" for name in columns) + " |")
    if args.json:
        write_json({"environment": environment_record(), "split": args.split, "trained_weights": args.trained_weights,
                    "errors": errors}, args.json, indent=1)


if __name__ == "__main__":
    main()
