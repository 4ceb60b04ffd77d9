import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from dwdet.data.coco import CocoDetection, load_coco
from dwdet.engine.evaluation import detections_to_coco

CATEGORIES = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 11, "name": "eleven"}]


def write_coco(tmp_path, images, annotations, categories=CATEGORIES, **extra):
    """Write PNGs for ``images`` ({"id", "width", "height"}) and the annotation JSON; return the
    image folder, the annotation path and the pixels written per image id."""
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for image in images:
        image.setdefault("file_name", f"{image['id']}.png")
        pixels[image["id"]] = rng.integers(0, 256, (image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels[image["id"]]).save(root / image["file_name"])
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories,
                                    **extra}))
    return str(root), str(ann_file), pixels


def ann(ann_id, image_id, category_id, bbox, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


@pytest.fixture
def messy(tmp_path):
    images = [{"id": 5, "width": 40, "height": 30}, {"id": 2, "width": 20, "height": 20},
              {"id": 9, "width": 16, "height": 24}]
    annotations = [
        ann(1, 5, 7, [2.0, 3.0, 10.0, 5.5]),  # plain
        ann(2, 5, 11, [35, 25, 10, 10]),  # partly outside: clipped to the image
        ann(3, 5, 3, [0, 0, 40, 30], iscrowd=1),  # crowd: ignored
        ann(4, 5, 3, [10, 10, 0, 4]),  # zero width: dropped
        ann(5, 5, 3, [50, 5, 5, 5]),  # entirely right of the image: nothing left after clipping
        ann(6, 2, 7, [1, 1, 5, 5], iscrowd=1),  # image 2 has only a crowd box: empty
    ]  # image 9 has no annotation at all: empty
    return write_coco(tmp_path, images, annotations)


def test_item_follows_the_contract_with_clipping_and_counts(messy):
    root, ann_file, pixels = messy
    dataset = CocoDetection(root, ann_file)
    assert len(dataset) == 1 and dataset.ids == [5]
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40) and image.is_contiguous()
    torch.testing.assert_close(image, torch.from_numpy(pixels[5]).permute(2, 0, 1).float() / 255)
    assert target["image_id"] == 5
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3.0, 12.0, 8.5], [35.0, 25.0, 40.0, 30.0]]))
    assert target["labels"].tolist() == [1, 2]  # category ids 3, 7, 11 -> labels 0, 1, 2
    stats = dataset.stats
    assert (stats.images_in_file, stats.images_kept, stats.empty_images) == (3, 1, 2)
    assert (stats.crowd_boxes, stats.degenerate_boxes, stats.unknown_category_boxes, stats.bad_images) == (2, 2, 0, 0)
    assert stats.clipped_boxes == 1
    # the line the trainer logs for the training and validation sets
    assert stats.describe() == ("1 of 3 images; 2 images without a usable box; 2 boxes of zero or negative size "
                                "(after clipping to the image); 2 crowd boxes; 1 boxes clipped to the image")


def test_evaluation_keeps_images_without_boxes(messy):
    root, ann_file, _ = messy
    dataset = CocoDetection(root, ann_file, filter_empty=False)
    assert dataset.ids == [2, 5, 9]
    with pytest.raises(IndexError):
        dataset[3]
    assert dataset.image_sizes == [(20, 20), (30, 40), (24, 16)]
    image, target = dataset[2]
    assert image.shape == (3, 24, 16)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["image_id"] == 9


def test_label_mapping_round_trip(tmp_path):
    images = [{"id": 1, "width": 50, "height": 40}]
    annotations = [ann(10, 1, 11, [1.5, 2.0, 7.0, 9.0]), ann(11, 1, 7, [20, 10, 4, 6]), ann(12, 1, 3, [0, 0, 50, 40])]
    root, ann_file, _ = write_coco(tmp_path, images, annotations)
    dataset = CocoDetection(root, ann_file)
    assert dataset.cat_ids == [3, 7, 11] and dataset.num_classes == 3
    assert dataset.class_names == ["three", "seven", "eleven"]
    assert dataset.categories == [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}, {"id": 11, "name": "eleven"}]

    # back through the one COCO-results writer, with the dataset's label order
    _, target = dataset[0]
    scores = torch.tensor([0.9, 0.8, 0.7])
    results = detections_to_coco(1, {**target, "scores": scores}, dataset.cat_ids)
    originals = {(a["category_id"], tuple(a["bbox"])) for a in annotations}
    assert {(r["category_id"], tuple(r["bbox"])) for r in results} == originals
    assert [r["score"] for r in results] == pytest.approx(scores.tolist())
    # The entries are what pycocotools accepts as detections.
    detections = dataset.coco.loadRes(results)
    assert len(detections.anns) == 3


@pytest.mark.parametrize("content, message", [
    (b"{not json", r"instances\.json is not valid JSON"),
    (b"[1, 2]", r"instances\.json: expected a JSON object at the top level, got list"),
    (json.dumps({"images": [], "categories": []}).encode(), r"instances\.json: missing key 'annotations'"),
    (json.dumps({"images": {}, "annotations": [], "categories": []}).encode(), r"'images' must be a list"),
    (json.dumps({"images": [{"id": 1, "width": 4, "height": 4}], "annotations": [],
                 "categories": []}).encode(), r"images\[0\] \(id 1\) lacks 'file_name'"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 0, "height": 4}], "annotations": [],
                 "categories": []}).encode(), r"image 1 has width/height 0/4"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                 "annotations": [ann(8, 1, 7, [0, 0, 1])], "categories": CATEGORIES}).encode(),
     r"annotation 8 has bbox \[0, 0, 1\]; expected \[x, y, width, height\]"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                 "annotations": [{"id": 8, "image_id": 1, "bbox": [0, 0, 1, 1]}], "categories": CATEGORIES}).encode(),
     r"annotations\[0\] \(id 8\) lacks 'category_id'"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                 "annotations": [ann(8, 2, 7, [0, 0, 1, 1])], "categories": CATEGORIES}).encode(),
     r"annotation 8 refers to image 2, which is not in 'images'"),
    (json.dumps({"images": [], "annotations": [], "categories": CATEGORIES + [{"id": 3, "name": "again"}]}).encode(),
     r"categories\[3\]: duplicate id 3"),
])
def test_malformed_annotation_files_are_named(tmp_path, content, message):
    ann_file = tmp_path / "instances.json"
    ann_file.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_coco(str(ann_file))


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"annotation file .*nowhere\.json does not exist"):
        CocoDetection(str(tmp_path), str(tmp_path / "nowhere.json"))


def test_unknown_category_errors_or_is_skipped(tmp_path):
    images = [{"id": 1, "width": 10, "height": 10}]
    annotations = [ann(41, 1, 7, [0, 0, 5, 5]), ann(42, 1, 99, [1, 1, 5, 5])]
    root, ann_file, _ = write_coco(tmp_path, images, annotations)
    with pytest.raises(ValueError, match=r"annotation 42 \(image 1\) .* category_id 99, which is not among"):
        CocoDetection(root, ann_file)
    dataset = CocoDetection(root, ann_file, on_unknown_category="skip")
    assert dataset.stats.unknown_category_boxes == 1
    assert dataset[0][1]["labels"].tolist() == [1]


def test_missing_image_file_errors_or_is_skipped(tmp_path):
    images = [{"id": 1, "width": 10, "height": 10}, {"id": 2, "width": 10, "height": 10}]
    annotations = [ann(1, 1, 7, [0, 0, 5, 5]), ann(2, 2, 7, [0, 0, 5, 5])]
    root, ann_file, _ = write_coco(tmp_path, images, annotations)
    (tmp_path / "images" / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) .* do not exist, e\.g\. .*2\.png \(image id 2\)"):
        CocoDetection(root, ann_file)
    with pytest.warns(RuntimeWarning, match=r"leaving out 1 image\(s\) .*2\.png \(image id 2\)"):
        dataset = CocoDetection(root, ann_file, on_bad_image="skip")
    assert dataset.ids == [1] and dataset.stats.bad_images == 1


def test_unreadable_image_errors_or_is_replaced(tmp_path):
    images = [{"id": 1, "width": 10, "height": 10}, {"id": 2, "width": 10, "height": 10}]
    annotations = [ann(1, 1, 7, [0, 0, 5, 5]), ann(2, 2, 11, [0, 0, 5, 5])]
    root, ann_file, _ = write_coco(tmp_path, images, annotations)
    (tmp_path / "images" / "1.png").write_bytes(b"this is not a png")
    dataset = CocoDetection(root, ann_file)
    with pytest.raises(RuntimeError, match=r"cannot read image .*1\.png \(image id 1\)"):
        dataset[0]
    dataset = CocoDetection(root, ann_file, on_bad_image="skip")
    with pytest.warns(RuntimeWarning, match=r"cannot read image .*1\.png \(image id 1\).*next image"):
        _, target = dataset[0]
    assert target["image_id"] == 2


def test_image_of_another_size_than_annotated(tmp_path):
    images = [{"id": 1, "width": 10, "height": 10}]
    root, ann_file, _ = write_coco(tmp_path, images, [ann(1, 1, 7, [0, 0, 5, 5])])
    Image.new("RGB", (12, 10)).save(tmp_path / "images" / "1.png")
    with pytest.raises(RuntimeError, match=re.escape("(image id 1) is 12x10 pixels but") + r".* says 10x10"):
        CocoDetection(root, ann_file)[0]


def test_grayscale_images_become_rgb(tmp_path):
    images = [{"id": 1, "width": 6, "height": 4}]
    root, ann_file, _ = write_coco(tmp_path, images, [ann(1, 1, 7, [0, 0, 5, 3])])
    Image.fromarray(np.full((4, 6), 51, dtype=np.uint8)).save(tmp_path / "images" / "1.png")
    image, _ = CocoDetection(root, ann_file)[0]
    assert image.shape == (3, 4, 6)
    torch.testing.assert_close(image, torch.full((3, 4, 6), 0.2))


def test_bad_policy_names(messy):
    root, ann_file, _ = messy
    with pytest.raises(ValueError, match=r"on_bad_image must be one of \('error', 'skip'\), got 'ignore'"):
        CocoDetection(root, ann_file, on_bad_image="ignore")
