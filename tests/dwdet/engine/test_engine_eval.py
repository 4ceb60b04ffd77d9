"""COCO evaluation: results format, category mapping, COCOeval of the ground truth itself."""
import json

import pytest
import torch
from pycocotools.coco import COCO

from dwdet.engine.evaluation import METRIC_NAMES, CocoEvaluator, coco_bbox_eval, detections_to_coco, evaluate
from dwdet.engine.loaders import eval_loader

CATEGORY_IDS = [5, 9]  # labels 0 and 1
IOUS = [f"{0.5 + 0.05 * k:.2f}" for k in range(10)]  # COCO's IoU thresholds, as AP_per_iou names them
# Per image (id, width, height, [(x1, y1, x2, y2, label)]): small (< 32^2), medium and large boxes,
# both classes, and one image without boxes.
IMAGES = [
    (11, 320, 240, [(10, 10, 30, 25, 0), (50, 60, 120, 110, 1), (100, 20, 300, 230, 0)]),
    (12, 200, 300, [(5, 5, 25, 20, 1), (40, 50, 200, 280, 1)]),
    (13, 64, 48, []),
]


@pytest.fixture
def coco_gt(tmp_path):
    annotations = []
    for image_id, _, _, boxes in IMAGES:
        for x1, y1, x2, y2, label in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[label],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": i, "width": w, "height": h, "file_name": f"{i}.jpg"} for i, w, h, _ in IMAGES],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"cat{c}"} for c in CATEGORY_IDS]}))
    return COCO(str(path))


class GroundTruthDataset(torch.utils.data.Dataset):
    def __len__(self):
        return len(IMAGES)

    def __getitem__(self, index):
        image_id, width, height, boxes = IMAGES[index]
        boxes = torch.tensor([b[:4] for b in boxes], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([b[4] for b in IMAGES[index][3]], dtype=torch.int64)
        return torch.zeros(3, height, width), {"boxes": boxes, "labels": labels, "image_id": image_id}


class EchoGroundTruth(torch.nn.Module):
    """A 'detector' that returns the ground truth with score 1 (plus an optional shift in pixels)."""

    def __init__(self, shift=0.0):
        super().__init__()
        self.shift = shift
        self.by_size = {(h, w): i for i, (_, w, h, _) in enumerate(IMAGES)}
        self.dataset = GroundTruthDataset()

    def forward(self, images):
        outputs = []
        for image in images:
            target = self.dataset[self.by_size[tuple(image.shape[1:])]][1]
            outputs.append({"boxes": target["boxes"] + self.shift, "labels": target["labels"],
                            "scores": torch.ones(len(target["labels"]))})
        return outputs


def test_detections_to_coco_maps_labels_and_boxes():
    detections = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "labels": torch.tensor([1]),
                  "scores": torch.tensor([0.5])}
    assert detections_to_coco(4, detections, CATEGORY_IDS) == [
        {"image_id": 4, "category_id": 9, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.5}]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got 2..2"):
        detections_to_coco(4, {**detections, "labels": torch.tensor([2])}, CATEGORY_IDS)


def test_ground_truth_as_detections_scores_ap_one(coco_gt, capsys):
    metrics = evaluate(EchoGroundTruth(), eval_loader(GroundTruthDataset(), batch_size=2, num_workers=0),
                       CocoEvaluator(coco_gt, CATEGORY_IDS), torch.device("cpu"))
    assert metrics == {**{name: pytest.approx(1.0) for name in METRIC_NAMES},
                       "AP_per_iou": {iou: pytest.approx(1.0) for iou in IOUS},
                       "AP_per_class": {"cat5": pytest.approx(1.0), "cat9": pytest.approx(1.0)}}
    printed = capsys.readouterr().out
    assert "Average Precision" in printed and "AP50" in printed and "100.0" in printed
    assert "| cat5  | 100.0 |" in printed and "| cat9  | 100.0 |" in printed
    assert "Loading and preparing results" not in printed and "index created" not in printed  # pycocotools'
    # and quietly, as during training: nothing at all
    evaluate(EchoGroundTruth(), eval_loader(GroundTruthDataset(), batch_size=2, num_workers=0),
             CocoEvaluator(coco_gt, CATEGORY_IDS), torch.device("cpu"), verbose=False)
    assert capsys.readouterr().out == ""


def test_per_class_ap_scores_each_category_alone(coco_gt):
    """Perfect detections of cat5 only: its AP is 1, cat9's 0, and the mean AP is their mean; a
    category without ground truth among the evaluated images has no AP."""
    results = []
    for image_id, _, _, boxes in IMAGES:
        results += [{"image_id": image_id, "category_id": CATEGORY_IDS[0], "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "score": 1.0} for x1, y1, x2, y2, label in boxes if label == 0]
    stats = coco_bbox_eval(coco_gt, results, verbose=False)
    assert stats["AP_per_class"] == {"cat5": pytest.approx(1.0), "cat9": 0.0}
    assert stats["AP"] == pytest.approx(0.5)
    only_cat9_images = coco_bbox_eval(coco_gt, results, image_ids=[12], verbose=False)
    assert only_cat9_images["AP_per_class"] == {"cat5": None, "cat9": 0.0}


def test_swapped_categories_and_shifted_boxes_score_lower(coco_gt):
    loader = eval_loader(GroundTruthDataset(), batch_size=1, num_workers=0)
    swapped = evaluate(EchoGroundTruth(), loader, CocoEvaluator(coco_gt, CATEGORY_IDS[::-1]), torch.device("cpu"),
                       verbose=False)
    assert swapped["AP"] == 0.0 and swapped["AP_per_class"] == {"cat5": 0.0, "cat9": 0.0}
    # without the classes the swapped detections are perfect again
    agnostic = evaluate(EchoGroundTruth(), loader, CocoEvaluator(coco_gt, CATEGORY_IDS[::-1]), torch.device("cpu"),
                        verbose=False, class_agnostic=True)
    assert agnostic == {**{name: pytest.approx(1.0) for name in METRIC_NAMES},
                        "AP_per_iou": {iou: pytest.approx(1.0) for iou in IOUS}}
    # A 4-pixel shift drops the small boxes below IoU 0.5 but keeps the large ones above 0.9.
    shifted = evaluate(EchoGroundTruth(shift=4.0), loader, CocoEvaluator(coco_gt, CATEGORY_IDS),
                       torch.device("cpu"), verbose=False)
    assert shifted["APs"] == 0.0 and shifted["APl"] == pytest.approx(0.9) and 0.0 < shifted["AP"] < 1.0
    # the AP at each IoU threshold: COCOeval's AP50 and AP75 among them, AP their mean, and nothing
    # above 0.93, the best IoU of a shifted box (200 x 210 moved by 4: 40376 / 43624)
    per_iou = shifted["AP_per_iou"]
    assert list(per_iou) == IOUS and per_iou["0.50"] == shifted["AP50"] and per_iou["0.75"] == shifted["AP75"]
    assert sum(per_iou.values()) / 10 == pytest.approx(shifted["AP"])
    assert per_iou["0.95"] == 0.0 and per_iou["0.90"] > 0.0
    assert all(a >= b for a, b in zip(list(per_iou.values()), list(per_iou.values())[1:]))


def test_no_detections_score_zero(coco_gt):
    assert coco_bbox_eval(coco_gt, [], verbose=False) == {**dict.fromkeys(METRIC_NAMES, 0.0),
                                                          "AP_per_iou": dict.fromkeys(IOUS, 0.0),
                                                          "AP_per_class": {"cat5": 0.0, "cat9": 0.0}}
    assert coco_bbox_eval(coco_gt, [], image_ids=[13], verbose=False)["AP_per_class"] == {"cat5": None,
                                                                                          "cat9": None}


def test_evaluation_is_restricted_to_the_processed_images(coco_gt):
    evaluator = CocoEvaluator(coco_gt, CATEGORY_IDS)
    image_id, _, _, boxes = IMAGES[1]
    target = GroundTruthDataset()[1][1]
    evaluator.process([image_id], [{"boxes": target["boxes"], "labels": target["labels"],
                                    "scores": torch.ones(len(boxes))}])
    assert evaluator.evaluate(verbose=False)["AP"] == pytest.approx(1.0)  # image 11 was not run: not a miss
