"""tools/tide_errors.py: a detector's AP50 sorted into TIDE's errors."""
import random

import pytest
from pycocotools.coco import COCO

from dwdet.engine.evaluation import PER_IOU, coco_bbox_eval
from tests.tool_loader import load_tool

tide_errors = load_tool("tide_errors")

# COCO's AP: precision interpolated at the 101 recalls 0, 0.01, .., 1
HALF_FOUND = 100 * 51 / 101  # every box right, half the objects found


def _coco(boxes, crowd=()):
    """One class, one image per entry of ``boxes`` (a list of xywh boxes each)."""
    anns = [{"id": len(crowd) + 1 + i, "image_id": image, "category_id": 1, "bbox": box, "area": box[2] * box[3],
             "iscrowd": 0} for i, (image, box) in enumerate((im, b) for im, bs in enumerate(boxes, 1) for b in bs)]
    anns += [{"id": i + 1, "image_id": image, "category_id": 1, "bbox": box, "area": box[2] * box[3], "iscrowd": 1}
             for i, (image, box) in enumerate(crowd)]
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "width": 200, "height": 200} for i in range(1, len(boxes) + 1)],
                    "categories": [{"id": 1, "name": "tree"}], "annotations": anns}
    coco.createIndex()
    return coco


def _found(*entries):
    return [{"image_id": image, "category_id": 1, "score": score, "bbox": box} for image, score, box in entries]


def _errors(coco, results):
    return tide_errors.tide_errors(coco, results, sorted(coco.getImgIds()))


def test_perfect_boxes_leave_no_error():
    coco = _coco([[[10, 10, 20, 20], [60, 60, 30, 30]]])
    errors = _errors(coco, _found((1, 0.9, [10, 10, 20, 20]), (1, 0.8, [60, 60, 30, 30])))
    assert errors["AP50"] == pytest.approx(100)
    assert all(errors[name] == pytest.approx(0) for name in (*tide_errors.MAIN_ERRORS, *tide_errors.SUMMARIES))


@pytest.mark.parametrize("first_box, error", [
    ([120, 120, 20, 20], "Bkg"),   # on nothing
    ([10, 10, 40, 40], "Loc"),     # IoU 0.25 with the object
])
def test_a_false_box_ranked_first_halves_ap50_and_fixing_it_restores_it(first_box, error):
    coco = _coco([[[10, 10, 20, 20]]])
    errors = _errors(coco, _found((1, 0.9, first_box), (1, 0.5, [10, 10, 20, 20])))
    # precision 1/2 at the only recall, 1: AP50 is 50, and 50 comes back with that box gone
    assert errors["AP50"] == pytest.approx(50)
    assert errors[error] == pytest.approx(50)
    assert errors["FalsePos"] == pytest.approx(50)
    others = set(tide_errors.MAIN_ERRORS) - {error}
    assert all(errors[name] == pytest.approx(0) for name in others)


def test_a_duplicate_between_two_found_objects():
    coco = _coco([[[10, 10, 20, 20], [100, 100, 30, 30]]])
    errors = _errors(coco, _found((1, 0.9, [10, 10, 20, 20]), (1, 0.8, [11, 11, 20, 20]),
                                  (1, 0.7, [100, 100, 30, 30])))
    # precision 1 up to recall 1/2, then 2/3: (51 + 50 * 2/3) / 101
    assert errors["AP50"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101)
    assert errors["Dupe"] == pytest.approx(100 - errors["AP50"])
    assert errors["Loc"] == pytest.approx(0) and errors["Bkg"] == pytest.approx(0)


def test_a_missed_object_and_a_box_on_a_crowd():
    coco = _coco([[[10, 10, 20, 20], [100, 100, 30, 30]]], crowd=[(1, [150, 10, 40, 40])])
    errors = _errors(coco, _found((1, 0.95, [150, 10, 40, 40]), (1, 0.9, [10, 10, 20, 20])))
    assert errors["AP50"] == pytest.approx(HALF_FOUND)  # the box on the crowd is no error
    assert errors["Bkg"] == pytest.approx(0)
    assert errors["Miss"] == pytest.approx(100 - HALF_FOUND)
    assert errors["FalseNeg"] == pytest.approx(100 - HALF_FOUND)


def test_boxes_on_an_image_without_objects_are_background_errors():
    coco = _coco([[[10, 10, 20, 20]], []])
    errors = _errors(coco, _found((2, 0.9, [10, 10, 20, 20]), (1, 0.5, [10, 10, 20, 20])))
    assert errors["AP50"] == pytest.approx(50) and errors["Bkg"] == pytest.approx(50)


@pytest.mark.parametrize("seed", range(8))
def test_ap50_agrees_with_pycocotools(seed):
    rng = random.Random(seed)
    truth = [[[rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(10, 50), rng.uniform(10, 50)]
              for _ in range(rng.randint(0, 6))] for _ in range(8)]
    crowds = [(image, [rng.uniform(0, 120), rng.uniform(0, 120), 60, 60]) for image in range(1, 9) if rng.random() < 0.5]
    coco = _coco(truth, crowds)
    results = []
    for image, boxes in enumerate(truth, 1):
        for x, y, w, h in boxes:  # a box near each object, some far off, and boxes on nothing
            for _ in range(2):
                shift = rng.choice((0.05, 0.3))
                results += _found((image, rng.random(), [x + shift * w * rng.uniform(-1, 1),
                                                         y + shift * h * rng.uniform(-1, 1), w, h]))
        results += _found(*((image, rng.random() * 0.7, [rng.uniform(0, 150), rng.uniform(0, 150), 30, 30])
                            for _ in range(3)))
    expected = coco_bbox_eval(coco, results, sorted(coco.getImgIds()), verbose=False)[PER_IOU]["0.50"]
    # TIDE reads precision at the recalls k / 100, COCO at numpy's linspace, which differ in the last
    # bit at 10 of the 101 points: a recall that falls exactly on one (25 objects: 7 / 25 = 0.28)
    # may move that one bar, 1/101 of the AP at most
    assert _errors(coco, results)["AP50"] == pytest.approx(100 * expected, abs=100 / 101)


def test_no_detections_score_zero_without_an_error():
    # TIDE fixes act on detections: with none, nothing is left to fix
    errors = _errors(_coco([[[10, 10, 20, 20]]]), [])
    assert errors["AP50"] == 0 and all(errors[name] == 0 for name in (*tide_errors.MAIN_ERRORS, *tide_errors.SUMMARIES))


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(SystemExit, match="not a finished run folder: config.json is missing"):
        tide_errors.run_errors(tmp_path, "val")
