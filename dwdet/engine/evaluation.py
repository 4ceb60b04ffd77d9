"""COCO bbox evaluation: distributed inference, results JSON, pycocotools COCOeval.

Each rank runs the detector on its shard of the images (see :func:`dwdet.engine.loaders.eval_loader`);
the detections are gathered to rank 0, written in the COCO results format (category ids mapped
back from the detector's 0-based labels, boxes as xywh) and scored with COCOeval.
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from dwdet.engine.precision import autocast
from dwdet.utils.dist import gather_to_main, is_main_process
from dwdet.utils.io import write_json

__all__ = ["METRIC_NAMES", "CocoEvaluator", "coco_bbox_eval", "detections_to_coco", "evaluate", "metrics_table"]

# The first six of COCOeval.stats, in its order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PER_CLASS = "AP_per_class"  # {class name: AP at IoU 0.50:0.95, all areas; None without ground truth}
PER_IOU = "AP_per_iou"  # {"0.50": AP at that IoU threshold, ...}: where along the IoU axis a gain lies


def detections_to_coco(image_id: int, detections: dict[str, torch.Tensor], category_ids: Sequence[int]
                       ) -> list[dict]:
    """One image's ``{"boxes" xyxy, "labels" 0-based, "scores"}`` as COCO result entries."""
    boxes = detections["boxes"].detach().float().cpu()
    labels = detections["labels"].detach().cpu().tolist()
    scores = detections["scores"].detach().float().cpu().tolist()
    if len(category_ids) and labels and not 0 <= min(labels) <= max(labels) < len(category_ids):
        raise ValueError(f"detection labels must be in [0, {len(category_ids)}), got {min(labels)}..{max(labels)}")
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    return [{"image_id": int(image_id), "category_id": int(category_ids[label]), "bbox": box, "score": score}
            for box, label, score in zip(xywh, labels, scores)]


def coco_bbox_eval(coco_gt: COCO, results: list[dict], image_ids: Iterable[int] | None = None,
                   verbose: bool = True, class_agnostic: bool = False) -> dict[str, float]:
    """COCOeval (bbox) of ``results`` over ``image_ids`` (default: all ground-truth images).
    ``class_agnostic`` matches detections to boxes whatever their classes (COCOeval's
    ``useCats = 0``): what the boxes and the ranking are worth without the classification.

    Returns AP, AP50, AP75, APs, APm, APl as fractions (COCOeval's -1 where an area range has no
    ground truth), ``AP_per_iou``: the AP at each of COCO's ten IoU thresholds (all areas; their
    mean is AP) and, unless ``class_agnostic``, ``AP_per_class``: each category's AP by name
    (``None`` for a category without ground truth among ``image_ids``). With ``verbose`` prints
    COCOeval's summary and :func:`metrics_table`.
    """
    image_ids = sorted(coco_gt.getImgIds() if image_ids is None else set(image_ids))
    names = _class_names(coco_gt)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
            evaluator.params.imgIds = image_ids
            evaluator.params.useCats = int(not class_agnostic)
            evaluator.evaluate()
            evaluator.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluator.summarize()
        stats: dict[str, Any] = dict(zip(METRIC_NAMES, (float(x) for x in evaluator.stats[:6])))
        # precision: (IoU thresholds, recall points, categories, area ranges, max dets); "all" areas,
        # 100 detections, as stats[0]; -1 marks recall points of a category without ground truth
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        stats[PER_IOU] = {f"{iou:.2f}": _mean_valid(p) for iou, p in zip(evaluator.params.iouThrs, precision)}
        if not class_agnostic:
            per_class = {}
            for k, cat_id in enumerate(evaluator.params.catIds):
                per_class[names[cat_id]] = _mean_valid(precision[:, :, k])
            stats[PER_CLASS] = per_class
    else:
        summary = io.StringIO("no detections: every AP is 0\n")
        stats = dict.fromkeys(METRIC_NAMES, 0.0)
        stats[PER_IOU] = {f"{iou:.2f}": 0.0 for iou in COCOeval(iouType="bbox").params.iouThrs}
        if not class_agnostic:
            with_gt = {ann["category_id"] for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids))}
            stats[PER_CLASS] = {names[c]: 0.0 if c in with_gt else None for c in sorted(coco_gt.cats)}
    if verbose:
        print(summary.getvalue(), end="")
        print(metrics_table(stats))
    return stats


def _mean_valid(precision) -> float | None:
    """The mean of COCOeval's precision entries that are not -1 (None when all are)."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _class_names(coco_gt: COCO) -> dict[int, str]:
    """Category id -> name; names shared by several categories get their id appended."""
    names = {cat_id: str(cat["name"]) for cat_id, cat in coco_gt.cats.items()}
    shared = {name for name in names.values() if list(names.values()).count(name) > 1}
    return {cat_id: f"{name} ({cat_id})" if name in shared else name for cat_id, name in names.items()}


def metrics_table(stats: dict[str, Any]) -> str:
    """The summary metrics as a one-row table in percent ("n/a" for COCOeval's -1), then the
    per-class AP, one class a row, when ``stats`` has it."""
    header = "| " + " | ".join(f"{name:>5}" for name in METRIC_NAMES) + " |"
    row = "| " + " | ".join(f"{100 * stats[name]:5.1f}" if stats[name] >= 0 else "  n/a"
                            for name in METRIC_NAMES) + " |"
    lines = [header, f"|{'|'.join('-------' for _ in METRIC_NAMES)}|", row]
    if stats.get(PER_CLASS):
        width = max(5, *(len(name) for name in stats[PER_CLASS]))
        lines += ["", f"| {'class':<{width}} |    AP |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:<{width}} | " + (f"{100 * ap:5.1f}" if ap is not None else "  n/a") + " |"
                  for name, ap in stats[PER_CLASS].items()]
    return "\n".join(lines)


class CocoEvaluator:
    """Accumulates detections on every rank; :meth:`evaluate` scores them on rank 0.

    ``category_ids[k]`` is the COCO category id of the detector's label ``k``.
    """

    def __init__(self, coco_gt: COCO, category_ids: Sequence[int]):
        self.coco_gt = coco_gt
        self.category_ids = list(category_ids)
        self.reset()

    def reset(self) -> None:
        self._image_ids: list[int] = []
        self._results: list[dict] = []

    def process(self, image_ids: Sequence[int], outputs: Sequence[dict[str, torch.Tensor]]) -> None:
        for image_id, detections in zip(image_ids, outputs, strict=True):
            self._image_ids.append(int(image_id))
            self._results.extend(detections_to_coco(int(image_id), detections, self.category_ids))

    def gather(self) -> tuple[list[int], list[dict]] | None:
        """All ranks' (image ids, results), on rank 0; ``None`` elsewhere."""
        shards = gather_to_main((self._image_ids, self._results))
        if shards is None:
            return None
        image_ids = [i for ids, _ in shards for i in ids]
        results = sorted((r for _, res in shards for r in res), key=lambda r: (r["image_id"], -r["score"]))
        return image_ids, results

    def evaluate(self, verbose: bool = True, results_path: str | os.PathLike | None = None,
                 class_agnostic: bool = False) -> dict[str, float] | None:
        """COCO metrics on rank 0, ``None`` on the other ranks (every rank must call it).
        With ``results_path``, rank 0 also writes the COCO results JSON there; see
        :func:`coco_bbox_eval` for ``class_agnostic``."""
        gathered = self.gather()
        if gathered is None:
            return None
        image_ids, results = gathered
        if results_path is not None:
            write_json(results, results_path)  # elsewhere, said where, if the path cannot be written
        return coco_bbox_eval(self.coco_gt, results, image_ids, verbose=verbose, class_agnostic=class_agnostic)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: Iterable, evaluator: CocoEvaluator, device: torch.device,
             amp: str = "none", verbose: bool = True, results_path: str | os.PathLike | None = None,
             class_agnostic: bool = False) -> dict[str, float] | None:
    """Run ``model`` (unwrapped from DDP) on this rank's ``loader`` and score all ranks' detections.

    Returns the COCO metrics on rank 0 and ``None`` elsewhere (optionally writing the COCO results
    JSON to ``results_path``); leaves the model in eval mode.
    """
    model.eval()
    evaluator.reset()
    for images, targets in tqdm(loader, desc="eval", disable=not is_main_process(), dynamic_ncols=True):
        images = [image.to(device, non_blocking=True) for image in images]
        with autocast(device, amp):
            outputs = model(images)
        evaluator.process([t["image_id"] for t in targets], outputs)
    return evaluator.evaluate(verbose=verbose, results_path=results_path, class_agnostic=class_agnostic)
