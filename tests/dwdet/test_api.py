"""dwdet.Detector on the shipped demo model: every kind of input gives the same detections, boxes in
the input's pixels name the objects drawn there, batching changes nothing, bad input is named."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from dwdet import Detections, Detector
from dwdet.api import ImageReadError
from dwdet.config import ConfigError
from tests.demo_images import DEMO_MODEL, demo_images


@pytest.fixture(scope="module")
def detector():
    return Detector.from_checkpoint(DEMO_MODEL, device="cpu")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Four rendered images of three sizes (saved losslessly, so that the files hold the same pixels)."""
    images, objects = demo_images(4, seed=1)
    folder = tmp_path_factory.mktemp("scene")
    paths = [folder / f"{i}.png" for i in range(len(images))]
    for pixels, path in zip(images, paths):
        Image.fromarray(pixels).save(path)
    return images, objects, paths


def assert_same(a: Detections, b: Detections):
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
    assert a.class_names == b.class_names


def assert_close(a: Detections, b: Detections):
    """The same detections up to float rounding (a batch of another size sums in another order)."""
    assert torch.equal(a.labels, b.labels) and a.class_names == b.class_names
    torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)


def test_the_four_kinds_of_input_give_the_same_detections(detector, scene):
    images, _, paths = scene
    from_paths = detector.predict([str(p) for p in paths])
    kinds = {
        "pathlib": list(paths),
        "PIL": [Image.open(p) for p in paths],
        "numpy": images,
        "float tensor": [torch.from_numpy(x).permute(2, 0, 1).float() / 255 for x in images],
        "uint8 tensor": [torch.from_numpy(x).permute(2, 0, 1) for x in images],
    }
    for kind, inputs in kinds.items():
        for a, b in zip(detector.predict(inputs), from_paths):
            assert_same(a, b)
    # one image in, one Detections out: the same as in a list (where it shares a batch with images[1])
    assert images[1].shape == images[2].shape
    single = detector.predict(images[2])
    assert isinstance(single, Detections)
    assert_close(single, from_paths[2])


def test_boxes_are_in_the_input_pixels_and_named_by_class(detector, scene):
    images, objects, _ = scene
    found_objects = total = 0
    for found, drawn in zip(detector.predict(images, score_thr=0.3), objects):
        assert found.boxes.dtype == torch.float32 and found.labels.dtype == torch.int64
        assert found.class_names == [detector.class_names[label] for label in found.labels.tolist()]
        assert (found.scores >= 0.3).all() and torch.equal(found.scores, found.scores.sort(descending=True).values)
        for name, box in drawn:
            total += 1
            same_class = [i for i, n in enumerate(found.class_names) if n == name]
            if same_class and box_iou(torch.tensor([box], dtype=torch.float32), found.boxes[same_class]).max() > 0.5:
                found_objects += 1
    assert total >= 12 and found_objects >= 0.75 * total  # the demo model's AP50 is 75.6 on this kind of image


def test_batching_and_score_thr(detector, scene):
    images, _, _ = scene
    one_by_one = [detector.predict(image) for image in images]
    batched = Detector(detector.model, detector.categories, "cpu", batch_size=3).predict(images + images)
    for a, b in zip(one_by_one + one_by_one, batched):
        assert_close(a, b)
    for everything, above in zip(detector.predict(images), detector.predict(images, score_thr=0.4)):
        keep = everything.scores >= 0.4
        assert 0 < len(above) < len(everything)
        assert torch.equal(above.boxes, everything.boxes[keep]) and torch.equal(above.scores, everything.scores[keep])


def test_bad_images_are_named(detector, tmp_path):
    with pytest.raises(ValueError, match=r"images\[0\]: a numpy image must be \(H, W, 3\) uint8 RGB, got \(8, 8, 3\) float"):
        detector.predict(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"images\[1\]: a float tensor image must lie in \[0, 1\], got values in "
                                         r"\[255, 255\] \(divide 0-255 pixels by 255\)"):
        detector.predict([torch.zeros(3, 8, 8), torch.full((3, 8, 8), 255.0)])
    with pytest.raises(ValueError, match=r"a tensor image must be \(3, H, W\), got \(1, 3, 8, 8\)"):
        detector.predict(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="expected a file path, PIL image, .* got int"):
        detector.predict([3])
    with pytest.raises(ImageReadError, match="cannot read the image .*missing.jpg"):
        detector.predict(tmp_path / "missing.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    with pytest.raises(ImageReadError, match="cannot read the image .*broken.jpg"):
        detector.predict([str(broken)])


def test_device_and_batch_size_are_checked():
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        Detector.from_checkpoint(DEMO_MODEL, device="cpu", batch_size=0)
    detector = Detector.from_checkpoint(DEMO_MODEL, device=torch.device("cpu"))
    assert next(detector.model.parameters()).device.type == "cpu" and detector.config.model.num_classes == 16


def test_config_changes_are_nested_dicts_checked_as_config_files_are(detector, scene):
    images, _, _ = scene
    strict = Detector.from_checkpoint(DEMO_MODEL, device="cpu", config={"model": {"score_thresh": 0.5}})
    assert strict.config.model.score_thresh == 0.5
    for everything, kept in zip(detector.predict(images), strict.predict(images)):
        assert torch.equal(kept.scores, everything.scores[everything.scores >= 0.5])
    with pytest.raises(ConfigError, match="score_thres"):
        Detector.from_checkpoint(DEMO_MODEL, device="cpu", config={"model": {"score_thres": 0.5}})
