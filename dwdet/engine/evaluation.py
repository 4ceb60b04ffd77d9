"""COCO bbox evaluation: distributed inference, results JSON, pycocotools COCOeval.

Each rank runs the detector on its shard of the images (see :func:`dwdet.engine.loaders.eval_loader`);
the detections are gathered to rank 0, written in the COCO results format (category ids mapped
back from the detector's 0-based labels, boxes as xywh) and scored with COCOeval.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Sequence

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from dwdet.engine.precision import autocast
from dwdet.utils.dist import gather_to_main, is_main_process

__all__ = ["METRIC_NAMES", "CocoEvaluator", "coco_bbox_eval", "detections_to_coco", "evaluate"]

# The first six of COCOeval.stats, in its order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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
    ground truth); with ``verbose`` prints COCOeval's summary and a table in percent ("n/a" for -1).
    """
    image_ids = sorted(coco_gt.getImgIds() if image_ids is None else set(image_ids))
    if results:
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.params.imgIds = image_ids
        evaluator.params.useCats = int(not class_agnostic)
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = dict(zip(METRIC_NAMES, (float(x) for x in evaluator.stats[:6])))
    else:
        summary = io.StringIO("no detections: every AP is 0\n")
        stats = dict.fromkeys(METRIC_NAMES, 0.0)
    if verbose:
        print(summary.getvalue(), end="")
        print(_table(stats))
    return stats


def _table(stats: dict[str, float]) -> str:
    header = "| " + " | ".join(f"{name:>5}" for name in stats) + " |"
    row = "| " + " | ".join(f"{100 * value:5.1f}" if value >= 0 else "  n/a" for value in stats.values()) + " |"
    return f"{header}\n|{'|'.join('-------' for _ in stats)}|\n{row}"


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
            with open(results_path, "w") as f:
                json.dump(results, f)
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
