"""How much AP a trained detector loses to the order of its scores, and how much to its boxes.

    python tools/rank_oracle.py work_dirs/compare/dw/seed0 work_dirs/compare/fcos/seed0 [--split val]

Each run (its config.json and last.pth) is evaluated three times on the same boxes, its
candidates (the boxes it would send to NMS) re-scored before NMS:

    model      its own score: the evaluation as it is
    score×IoU  its score times the box's IoU with the closest ground-truth box of its class: the
               same confidence, ranked as if the score knew how well each box fits
    IoU        that IoU alone: every box ranked by its fit, classification and background errors
               left only where a box overlaps no object of its class

What the ``model`` row lacks against ``score×IoU`` is AP lost to a score that does not follow the
box's quality; what ``IoU`` still lacks at high IoU thresholds is lost to the boxes themselves.

``--objectness-powers 0 2`` adds rankings the detector itself could use (``model.objectness_power``):

    cls×obj^P  sigmoid(cls) * sigmoid(objectness) ** P, the candidates chosen by that score (P = 0:
               the class score alone; the model's own ranking is P = model.objectness_power, 1 as released)

``--finest-levels 1 2`` adds the model's own ranking with only the candidates of its finest FPN
levels (``levels<=1``: stride 8 alone; ``levels<=2``: strides 8 and 16): how much of its AP a
detector draws from its coarser levels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import torch  # noqa: E402
from torch.utils.data import Subset  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dwdet.engine import CheckpointError, builders  # noqa: E402
from dwdet.engine.evaluation import PER_IOU, coco_bbox_eval, detections_to_coco  # noqa: E402
from dwdet.engine.loaders import eval_loader  # noqa: E402
from dwdet.engine.precision import autocast  # noqa: E402
from dwdet.engine.runtime import environment_record  # noqa: E402
from dwdet.models import FCOSDetector  # noqa: E402
from dwdet.utils.io import write_json  # noqa: E402

RESCORINGS = {"model": lambda score, iou: score, "score×IoU": lambda score, iou: score * iou,
              "IoU": lambda score, iou: iou}


def best_iou_of_class(boxes: torch.Tensor, labels: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor
                      ) -> torch.Tensor:
    """Each box's largest IoU with a ground-truth box of its own label (0 where there is none)."""
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return boxes.new_zeros(len(boxes))
    iou = box_iou(boxes, gt_boxes) * (labels[:, None] == gt_labels[None, :])
    return iou.amax(dim=1)


@torch.no_grad()
def rescored_detections(model: FCOSDetector, images: list[torch.Tensor], targets: list[dict],
                        objectness_powers: tuple[float, ...] = (), finest_levels: tuple[int, ...] = ()
                        ) -> list[dict[str, dict]]:
    """The detections of each image of a batch under each of :data:`RESCORINGS`, each of
    ``objectness_powers`` and each of ``finest_levels``, in the image's own pixels; the batch is
    padded and run as the evaluation runs it."""
    original_sizes = [tuple(image.shape[-2:]) for image in images]
    batch, resized = model.transform(images, [{"boxes": t["boxes"].float(), "labels": t["labels"]} for t in targets])
    outputs = [[x.float() for x in level_maps] for level_maps in model.head(list(model.backbone(batch.tensors).values()))]
    found = model.candidates(*outputs, batch.image_sizes)
    rankings = {name: [dict(f, scores=rescore(f["scores"], best_iou_of_class(f["boxes"], f["labels"], r["boxes"], r["labels"])))
                       for f, r in zip(found, resized)]
                for name, rescore in RESCORINGS.items()}
    for power in objectness_powers:
        rankings[f"cls×obj^{power:g}"] = model.candidates(*outputs, batch.image_sizes, objectness_power=power)
    for count in finest_levels:  # candidates() reads the levels it is given, finest first
        rankings[f"levels<={count}"] = model.candidates(*(maps[:count] for maps in outputs), batch.image_sizes)
    detections = [{} for _ in images]
    for name, ranked in rankings.items():
        kept = model.transform.postprocess(model.select(ranked, batch.image_sizes), batch.image_sizes, original_sizes)
        for image_detections, kept_detections in zip(detections, kept):
            image_detections[name] = kept_detections
    return detections


def run_oracle(run: Path, split: str, trained_weights: bool = False, max_images: int | None = None,
               objectness_powers: tuple[float, ...] = (), finest_levels: tuple[int, ...] = ()) -> dict[str, dict]:
    """COCO metrics of ``run`` on ``split`` under each ranking (:func:`rescored_detections`), its
    images batched and its precision (``train.amp``) as its evaluation has them."""
    try:
        model, cfg, dataset = builders.load_run(run, split, trained_weights=trained_weights)
    except CheckpointError as error:
        raise SystemExit(str(error)) from None
    coco, cat_ids = dataset.coco, dataset.cat_ids
    if max_images is not None:
        dataset = Subset(dataset, range(min(max_images, len(dataset))))
    results: dict[str, list[dict]] = {}
    image_ids = []
    device = torch.device("cpu")
    for images, targets in tqdm(eval_loader(dataset, cfg.eval.batch_size, 0), desc=str(run), dynamic_ncols=True):
        with autocast(device, cfg.train.amp):
            detections = rescored_detections(model, images, targets, objectness_powers, finest_levels)
        for target, by_rescoring in zip(targets, detections):
            image_ids.append(int(target["image_id"]))
            for name, found in by_rescoring.items():
                results.setdefault(name, []).extend(detections_to_coco(image_ids[-1], found, cat_ids))
    return {name: coco_bbox_eval(coco, found, image_ids, verbose=False) for name, found in results.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders written by tools/train.py")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first images")
    parser.add_argument("--json", help="also write the metrics here, with the environment (revision, CPU, command)")
    parser.add_argument("--trained-weights", action="store_true",
                        help="for the runs trained with train.ema: their trained weights, not their average "
                             "(the others have only their trained weights)")
    parser.add_argument("--finest-levels", type=int, nargs="+", default=[], metavar="K",
                        help="also rank with only the candidates of the K finest FPN levels")
    parser.add_argument("--objectness-powers", type=float, nargs="+", default=[], metavar="P",
                        help="also rank by sigmoid(cls) * sigmoid(objectness) ** P, as model.objectness_power=P would")
    args = parser.parse_args(argv)
    metrics = {run: run_oracle(Path(run), args.split, args.trained_weights, args.max_images,
                               tuple(args.objectness_powers), tuple(args.finest_levels)) for run in args.runs}
    thresholds = ("0.50", "0.75", "0.90")
    print("| run | ranking | AP | " + " | ".join(f"AP@{t}" for t in thresholds) + " |")
    print("| --- " * (3 + len(thresholds)) + "|")
    for run, by_rescoring in metrics.items():
        for name, stats in by_rescoring.items():
            print(f"| {run} | {name} | {100 * stats['AP']:.1f} | "
                  + " | ".join(f"{100 * stats[PER_IOU][t]:.1f}" for t in thresholds) + " |")
    if args.json:
        write_json({"environment": environment_record(), "split": args.split,
                    "trained_weights": args.trained_weights, "metrics": metrics}, args.json, indent=1)


if __name__ == "__main__":
    main()
