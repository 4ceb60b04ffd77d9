"""tools/rank_oracle.py: re-scoring a detector's candidates by the fit of their boxes."""
import pytest
import torch
from torchvision.ops import box_iou

from dwdet.models import build_fcos
from tests.tool_loader import load_tool

rank_oracle = load_tool("rank_oracle")


def test_best_iou_counts_only_boxes_of_the_same_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    labels = torch.tensor([0, 1, 0])
    gt_boxes = torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 10]])
    gt_labels = torch.tensor([0, 2])
    iou = rank_oracle.best_iou_of_class(boxes, labels, gt_boxes, gt_labels)
    assert iou.tolist() == [0.5, 0.0, 0.0]  # the exact match is of class 2, the box of class 1 has no GT
    assert rank_oracle.best_iou_of_class(boxes, labels, gt_boxes[:0], gt_labels[:0]).tolist() == [0.0] * 3


def test_rescorings_keep_the_models_detections_and_rank_by_fit():
    torch.manual_seed(0)
    model = build_fcos(3, None, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=64,
                       min_size=64, max_size=128).eval()
    model.score_thresh = 0.0  # an untrained head scores everything low: keep all candidates
    # two sizes: resized by 64 / 40 and 64 / 48 for the detector, padded to one batch, boxes mapped back
    images = [torch.rand(3, 40, 56), torch.rand(3, 48, 40)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 34.0], [20.0, 2.0, 50.0, 20.0]]), "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[10.0, 10.0, 30.0, 44.0]]), "labels": torch.tensor([0])}]
    found = rank_oracle.rescored_detections(model, images, targets)
    with torch.no_grad():
        expected = model(images)
    for image_found, image_expected, target in zip(found, expected, targets):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(image_found["model"][key], image_expected[key])
        # "IoU": every kept box scored by its IoU with the GT box of its class, measured here in the
        # image's own pixels
        by_iou = image_found["IoU"]
        assert len(by_iou["boxes"]) > 10
        iou = box_iou(by_iou["boxes"], target["boxes"]) * (by_iou["labels"][:, None] == target["labels"][None])
        torch.testing.assert_close(by_iou["scores"], iou.amax(1), rtol=1e-4, atol=1e-5)
        assert by_iou["scores"].max() > 0.2 and torch.all(by_iou["scores"][:-1] >= by_iou["scores"][1:])
        # "score×IoU": the model's own score scaled by that IoU
        both = image_found["score×IoU"]
        iou = box_iou(both["boxes"], target["boxes"]) * (both["labels"][:, None] == target["labels"][None])
        fits = iou.amax(1)
        assert torch.all(both["scores"] <= fits + 1e-6) and (both["scores"] > 0).any()
        ratio = both["scores"][fits > 0] / fits[fits > 0]
        assert ratio.max() <= image_found["model"]["scores"].max() * (1 + 1e-5)


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(SystemExit, match="not a finished run folder: config.json is missing"):
        rank_oracle.run_oracle(tmp_path, "val")


def _untrained_model_and_batch():
    """An untrained detector keeping every candidate, and two images of two sizes with one GT each."""
    torch.manual_seed(0)
    model = build_fcos(3, None, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=64,
                       min_size=64, max_size=128).eval()
    model.score_thresh = 0.0
    images = [torch.rand(3, 40, 56), torch.rand(3, 48, 40)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 34.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 10.0, 30.0, 44.0]]), "labels": torch.tensor([0])}]
    return model, images, targets


def test_objectness_powers_rank_as_the_detector_would_with_that_setting():
    model, images, targets = _untrained_model_and_batch()
    found = rank_oracle.rescored_detections(model, images, targets, objectness_powers=(1.0, 0.0))
    for power in (1.0, 0.0):
        model.objectness_power = power
        with torch.no_grad():
            expected = model(images)
        for image_found, image_expected in zip(found, expected):
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(image_found[f"cls×obj^{power:g}"][key], image_expected[key])
    # the class score alone ranks otherwise than the model's own score
    assert not torch.equal(found[0]["cls×obj^0"]["scores"], found[0]["model"]["scores"])


def test_finest_levels_keep_the_candidates_of_those_levels_only():
    model, images, targets = _untrained_model_and_batch()
    levels = len(model.head.strides)
    found = rank_oracle.rescored_detections(model, images, targets, finest_levels=(1, levels))
    for image_found in found:
        for key in ("boxes", "scores", "labels"):  # every level: the model's own detections
            assert torch.equal(image_found[f"levels<={levels}"][key], image_found["model"][key])
    # the finest level alone: its scores are the stride-8 map's, fewer than the model's boxes
    with torch.no_grad():
        batch, _ = model.transform(images)
        cls, _, obj = model.head(list(model.backbone(batch.tensors).values()))
    for i, image_found in enumerate(found):
        finest = (cls[0][i].sigmoid() * obj[0][i].sigmoid()).flatten()
        scores = image_found["levels<=1"]["scores"]
        assert len(scores) > 0 and torch.isin(scores, finest).all()
        assert not torch.isin(image_found["model"]["scores"], finest).all()
