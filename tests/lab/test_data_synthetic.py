import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

import lab.make_synthetic as make_synthetic
import lab.synthetic as synthetic
from dwdet.data.coco import CocoDetection
from lab.synthetic import SHAPE_CLASSES, SyntheticConfig, ensure_synthetic, generate_synthetic

TINY = dict(num_train=3, num_val=2, image_size=64, min_object_size=6)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """A small default-looking benchmark: enough objects to populate every class and area range."""
    return ensure_synthetic(tmp_path_factory.mktemp("synthetic") / "shapes", seed=0, num_train=24, num_val=4,
                            image_size=256)


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path, image_format):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_synthetic(tmp_path / name, SyntheticConfig(seed=seed, image_format=image_format, **TINY))
    a, b, c = (files(tmp_path / name) for name in "abc")
    assert len(a) == 1 + 2 + 3 + 2  # manifest, two annotation files, images
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if not k.startswith("manifest"))


def test_annotations_cover_every_class_and_area_range(benchmark):
    for split, expected_images in (("train", 24), ("val", 4)):
        coco = COCO(str(benchmark[split].annotations))
        assert len(coco.imgs) == expected_images
        assert [coco.cats[c]["name"] for c in sorted(coco.cats)] == list(SHAPE_CLASSES)
    coco = COCO(str(benchmark["train"].annotations))
    anns = list(coco.anns.values())
    assert {a["category_id"] for a in anns} == set(coco.cats)
    areas = np.array([a["bbox"][2] * a["bbox"][3] for a in anns])
    assert all(a["area"] == a["bbox"][2] * a["bbox"][3] and a["iscrowd"] == 0 for a in anns)
    assert (areas < 32**2).sum() > 0 and ((areas >= 32**2) & (areas < 96**2)).sum() > 0 and (areas >= 96**2).sum() > 0
    for a in anns:
        image = coco.imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]
    shapes = {(i["width"] >= i["height"], max(i["width"], i["height"])) for i in coco.imgs.values()}
    assert shapes == {(True, 256), (False, 256)}  # landscape and portrait, long side as asked


def test_loads_as_a_dataset(benchmark):
    dataset = CocoDetection(str(benchmark["val"].images), str(benchmark["val"].annotations), filter_empty=False)
    image, target = dataset[0]
    assert image.shape[1:] == dataset.image_sizes[0] and 0 <= image.min() and image.max() <= 1
    assert dataset.num_classes == len(SHAPE_CLASSES) and target["labels"].max() < len(SHAPE_CLASSES)
    assert dataset.stats.degenerate_boxes == 0


def test_occlusion_leaves_out_hidden_objects_and_keeps_full_boxes():
    square = np.ones((4, 4), dtype=bool)
    placed = [(0, (0, 0), square), (1, (1, 0), square), (2, (2, 0), square), (3, (8, 8), square)]
    # Bottom to top: 0 spans x 0..3, 1 spans x 1..4, 2 spans x 2..5, 3 stands alone. 2 hides 3/4 of 1,
    # which is left out; 0 is then hidden by 2 only (2/4), not by the left-out 1 as well (3/4).
    kept = synthetic._visible_enough(placed, 12, 12, max_occlusion=0.6)
    assert [label for label, _, _ in kept] == [0, 2, 3]
    kept = synthetic._visible_enough(placed, 12, 12, max_occlusion=0.75)
    assert [label for label, _, _ in kept] == [0, 1, 2, 3]


def test_ensure_generates_only_when_missing_or_different(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    paths = ensure_synthetic(root, seed=3, **TINY)
    assert paths["train"].annotations == root / "annotations" / "instances_train.json"
    before = files(root)
    assert json.loads(before["manifest.json"])["config"]["seed"] == 3

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated although the manifest matches")

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "generate_synthetic", must_not_run)
        ensure_synthetic(root, seed=3, **TINY)
    assert files(root) == before

    ensure_synthetic(root, seed=3, **{**TINY, "num_val": 1})
    assert len(COCO(str(root / "annotations" / "instances_val.json")).imgs) == 1
    assert not (root / "val" / "000002.jpg").exists()  # the stale folder was replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no staging folder left


def test_ensure_keeps_the_copy_of_a_process_that_finished_first(tmp_path, monkeypatch):
    # Two trainings starting together both generate; the one finishing second must not pull the
    # folder from under the first, which is already reading it.
    root = tmp_path / "shapes"
    real = synthetic.generate_synthetic

    def slower_than_the_other(out, config, splits=None):
        real(root, config, splits)  # the other process finishes and renames its copy into place first
        (root / "in-use").write_text("")
        real(out, config, splits)

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "generate_synthetic", slower_than_the_other)
        ensure_synthetic(root, seed=3, **TINY)
    assert (root / "in-use").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # the second copy was discarded


# Digests of every file (names and bytes) of the folders that the generator wrote before it had a
# test split, for TINY with seed 3, 4 hues and patterns: old runs stay valid only if they match.
TRAIN_VAL_DIGESTS = {"jpg": "3cea66377f41d8d24f26cee6b691308cf7fb6388cefb60a9775e462fa3009095",
                     "png": "8fc34667922f2dbbe1cd1968101a8f34521b82cceecb6e44733145534f11b741"}


def digest(root: Path, exclude: str = "test") -> str:
    sha = hashlib.sha256()
    for name, data in files(root).items():
        if exclude not in name:
            sha.update(name.encode())
            sha.update(data)
    return sha.hexdigest()


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_train_and_val_files_are_those_generated_before_the_test_split(tmp_path, image_format):
    params = dict(seed=3, colours=4, patterns=True, image_format=image_format, **TINY)
    generate_synthetic(tmp_path / "none", SyntheticConfig(**params))
    assert digest(tmp_path / "none") == TRAIN_VAL_DIGESTS[image_format]
    generate_synthetic(tmp_path / "with", SyntheticConfig(**params, num_test=2))
    assert {k: v for k, v in files(tmp_path / "with").items() if "test" not in k and "manifest" not in k} == \
        {k: v for k, v in files(tmp_path / "none").items() if "manifest" not in k}


def test_the_test_split_has_its_own_seed(tmp_path):
    a = ensure_synthetic(tmp_path / "a", seed=0, num_test=3, test_seed=7, **TINY)
    b = ensure_synthetic(tmp_path / "b", seed=1, num_test=3, test_seed=7, **TINY)
    c = ensure_synthetic(tmp_path / "c", seed=0, num_test=3, test_seed=8, **TINY)
    test_files = [files(paths["test"].images) for paths in (a, b, c)]
    assert len(test_files[0]) == 3
    assert test_files[0] == test_files[1]  # another data seed, the same test images
    assert all(test_files[0][k] != test_files[2][k] for k in test_files[0])  # another test seed
    train = [files(paths["train"].images) for paths in (a, c)]
    assert train[0] == train[1]  # the test seed leaves train alone
    # no test image repeats a train or val image of the same seed and index
    for split in ("train", "val"):
        other = files(a[split].images)
        assert all(other[k] != test_files[0][k] for k in other.keys() & test_files[0].keys())
    coco = COCO(str(a["test"].annotations))
    assert len(coco.imgs) == 3 and coco.dataset["info"]["seed"] == 7


def test_ensure_adds_a_test_split_without_touching_train_and_val(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    paths = ensure_synthetic(root, seed=3, **TINY)
    assert "test" not in paths and not (root / "test").exists()
    before = files(root)
    calls = []
    real = synthetic.generate_synthetic

    def record(out, config, splits=None):
        calls.append(splits)
        real(out, config, splits)

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "generate_synthetic", record)
        paths = ensure_synthetic(root, seed=3, num_test=2, **TINY)
        assert calls == [("test",)]  # train and val were not generated again
        after = files(root)
        assert {k: v for k, v in after.items() if k in before and k != "manifest.json"} == \
            {k: v for k, v in before.items() if k != "manifest.json"}
        assert len(COCO(str(paths["test"].annotations)).imgs) == 2
        assert json.loads(after["manifest.json"])["test"] == {"num_test": 2, "test_seed": 1}
        # a config without a test split still matches the folder; the same test split too
        ensure_synthetic(root, seed=3, **TINY)
        ensure_synthetic(root, seed=3, num_test=2, **TINY)
        assert calls == [("test",)]
        # another test seed redraws the test split alone, replacing it
        ensure_synthetic(root, seed=3, num_test=1, test_seed=5, **TINY)
        assert calls == [("test",), ("test",)]
    assert sorted(p.name for p in (root / "test").iterdir()) == ["000001.jpg"]
    assert {k: v for k, v in files(root).items() if k in before and k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "manifest.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no staging folder left
    # train/val parameters changed: everything is generated again, the test split included
    paths = ensure_synthetic(root, seed=4, num_test=1, **TINY)
    assert json.loads((root / "manifest.json").read_text())["config"]["seed"] == 4 and paths["test"].images.is_dir()


def test_ensure_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"mine is not empty and has no manifest\.json"):
        ensure_synthetic(tmp_path / "mine", **TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("params, message", [
    (dict(image_format="bmp"), "image_format must be 'jpg' or 'png'"),
    (dict(min_objects=5, max_objects=2), "need 0 <= min_objects <= max_objects"),
    (dict(image_size=64, min_object_size=60), "min_object_size 60 exceeds the largest object size"),
    (dict(max_occlusion=1.0), r"max_occlusion must be in \[0, 1\)"),
    (dict(colours=1), r"colours must be 0 \(any colour\) or a number of hues in \[2, 12\]"),
    (dict(colours=13), r"colours must be 0"),
])
def test_bad_configuration_is_named(params, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**params)


def test_command_line_tool(tmp_path, capsys):
    make_synthetic.main(["--out", str(tmp_path / "cli"), "--seed", "7", "--num-train", "2", "--num-val", "1",
               "--image-size", "64", "--min-object-size", "6", "--aspect-ratios", "1", "--image-format", "png"])
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["config"] == {**manifest["config"], "seed": 7, "num_train": 2, "num_val": 1, "image_size": 64,
                                  "aspect_ratios": [1.0], "image_format": "png"}
    assert sorted(p.name for p in (tmp_path / "cli" / "train").iterdir()) == ["000001.png", "000002.png"]
    printed = capsys.readouterr().out
    assert "train: " in printed and "2 images" in printed and "val: " in printed and "1 images" in printed


def test_colour_classes_are_shape_times_hue(tmp_path):
    names = synthetic.class_names(10)
    assert len(names) == 80 and len(set(names)) == 80
    assert names[:3] == ("red rectangle", "orange rectangle", "yellow rectangle") and names[-1] == "rose diamond"
    for colours in range(2, synthetic.MAX_COLOURS + 1):
        assert len(set(synthetic.class_names(colours))) == 8 * colours  # every hue keeps its own name
    paths = ensure_synthetic(tmp_path / "colours", seed=0, colours=4, num_train=12, num_val=0, image_size=128,
                             image_format="png", noise_std=0.0, max_strokes=0, max_blobs=0, max_occlusion=0.01)
    coco = COCO(str(paths["train"].annotations))
    assert [c["name"] for c in coco.loadCats(sorted(coco.cats))] == list(synthetic.class_names(4))
    import colorsys
    from PIL import Image
    checked = 0
    for ann in coco.anns.values():
        image = np.asarray(Image.open(paths["train"].images / coco.imgs[ann["image_id"]]["file_name"]))
        x, y, w, h = ann["bbox"]
        pixels = image[y:y + h, x:x + w].reshape(-1, 3) / 255.0
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels])
        object_pixels = hsv[hsv[:, 1] > 0.5]  # the object is saturated, the background is not
        if len(object_pixels) < 10:
            continue
        hue = np.median(object_pixels[:, 0])
        hue_class = (ann["category_id"] - 1) % 4
        assert min(abs(hue - hue_class / 4), 1 - abs(hue - hue_class / 4)) < 0.05, ann
        checked += 1
    assert checked >= 10


def test_colours_zero_keeps_the_original_images(tmp_path):
    # The earlier benchmark results were measured on these images: the generator before the hue
    # classes existed wrote exactly these bytes (sha256 over the sorted paths and contents).
    generate_synthetic(tmp_path, SyntheticConfig(**TINY))
    digest = hashlib.sha256()
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            digest.update(str(path.relative_to(tmp_path)).encode())
            digest.update(path.read_bytes())
    assert digest.hexdigest() == "7ef3d762534f325a62f08396a5b63d9d7c35b08b86c0d76978077f6b7293921a"


def test_pattern_fills_are_the_named_textures():
    bright = (200, 90, 30)
    dark = tuple(round(c / 3) for c in bright)
    masks = {}
    for pattern in synthetic.PATTERNS:
        fill = synthetic._pattern_fill(pattern, (24, 30), bright, np.random.default_rng(1))
        assert fill.shape == (24, 30, 3) and fill.dtype == np.uint8
        on = (fill == bright).all(-1)
        assert (on | (fill == dark).all(-1)).all(), pattern  # two shades of one hue, nothing else
        masks[pattern] = on
    assert masks["solid"].all()
    period = 6  # a quarter of the short side
    stripes = masks["h-striped"]
    assert (stripes == stripes[:, :1]).all() and stripes[:, 0].any() and not stripes[:, 0].all()  # rows uniform
    assert (np.roll(stripes, period, axis=0) == stripes).all()
    assert (masks["v-striped"] == masks["v-striped"][:1]).all()  # columns uniform
    assert (np.roll(np.roll(masks["slashed"], 1, axis=0), -1, axis=1) == masks["slashed"]).all()  # along x + y
    assert (np.roll(np.roll(masks["backslashed"], 1, axis=0), 1, axis=1) == masks["backslashed"]).all()
    assert 0.1 < masks["dotted"].mean() < 0.5 < masks["gridded"].mean() < 0.7
    assert len({m.tobytes() for m in masks.values()}) == len(synthetic.PATTERNS)
    with pytest.raises(ValueError, match="unknown pattern 'plaid'"):
        synthetic._pattern_fill("plaid", (8, 8), bright, np.random.default_rng(0))


def test_pattern_classes_are_pattern_times_hue(tmp_path):
    names = synthetic.class_names(10, patterns=True)
    assert len(set(names)) == 80 and names[:2] == ("red solid", "orange solid") and names[-1] == "rose gridded"
    with pytest.raises(ValueError, match="patterns need colours > 0"):
        SyntheticConfig(patterns=True)
    paths = ensure_synthetic(tmp_path / "patterns", seed=0, colours=4, patterns=True, num_train=16, num_val=0,
                             image_size=128, image_format="png", noise_std=0.0, max_strokes=0, max_blobs=0,
                             max_occlusion=0.01, min_object_size=24)
    coco = COCO(str(paths["train"].annotations))
    assert [c["name"] for c in coco.loadCats(sorted(coco.cats))] == list(synthetic.class_names(4, True))
    from PIL import Image
    checked = 0
    for ann in coco.anns.values():
        image = np.asarray(Image.open(paths["train"].images / coco.imgs[ann["image_id"]]["file_name"])).astype(int)
        x, y, w, h = ann["bbox"]
        centre = image[y + 3 * h // 8:y + 5 * h // 8, x + 3 * w // 8:x + 5 * w // 8]  # inside every filled shape
        shades = np.unique(centre.reshape(-1, 3), axis=0)
        pattern = synthetic.PATTERNS[(ann["category_id"] - 1) // 4]
        if len(centre.reshape(-1, 3)) < 9 or len(shades) > 2:  # another object in front: skip
            continue
        assert len(shades) == (1 if pattern == "solid" else 2), (pattern, shades)
        if pattern == "h-striped":
            assert (centre == centre[:, :1]).all()
        if pattern == "v-striped":
            assert (centre == centre[:1]).all()
        checked += 1
    assert checked >= 10


def test_labels_rename_the_classes_of_the_same_images(tmp_path):
    params = dict(seed=0, colours=3, patterns=True, num_train=6, num_val=0, image_size=96, min_object_size=12)
    full = ensure_synthetic(tmp_path / "class", **params)
    full_coco = COCO(str(full["train"].annotations))
    expected = {"kind": (synthetic.PATTERNS, lambda label: label // 3),
                "hue": (("red", "green", "blue"), lambda label: label % 3),  # hues 0, 120, 240 degrees
                "object": (("object",), lambda label: 0)}
    for labels, (names, relabel) in expected.items():
        paths = ensure_synthetic(tmp_path / labels, labels=labels, **params)
        coco = COCO(str(paths["train"].annotations))
        assert [c["name"] for c in coco.loadCats(sorted(coco.cats))] == list(names)
        assert [(a["bbox"], a["category_id"]) for a in coco.anns.values()] == \
            [(a["bbox"], relabel(a["category_id"] - 1) + 1) for a in full_coco.anns.values()]
        for image in coco.imgs.values():
            assert (paths["train"].images / image["file_name"]).read_bytes() == \
                (full["train"].images / image["file_name"]).read_bytes()
    with pytest.raises(ValueError, match="labels must be one of"):
        SyntheticConfig(labels="colour")
    with pytest.raises(ValueError, match="labels='hue' needs colours > 0"):
        SyntheticConfig(labels="hue")
