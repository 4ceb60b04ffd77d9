"""lab/make_treecrowns.py on a tiny wheel-like zip of Pascal VOC images made here (no network)."""
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

import lab.make_treecrowns as treecrowns
from dwdet.data.coco import CocoDetection
from tests.paths import ROOT as REPO

Region = treecrowns.Region

# (xmin, ymin, xmax, ymax) on a 100 x 80 image
BOXES = [(5, 5, 15, 15),  # inside the first tile
         (30, 5, 50, 15),  # half inside the first tile (x < 40): kept there, clipped
         (35, 20, 55, 30),  # a quarter inside the first tile: iscrowd there
         (70, 50, 90, 75)]
# train: all of site a and the top of site b; val and test: the two halves of the rest of site b
SPLITS = {"train": (Region("site_a"), Region("site_b", y1=40)), "val": (Region("site_b", y0=40, x1=50),),
          "test": (Region("site_b", x0=50, y0=40),)}


def voc(boxes, filename="x.png"):
    objects = "".join(f"<object><name>Tree</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                      f"<ymax>{d}</ymax></bndbox></object>" for a, b, c, d in boxes)
    return f"<annotation><filename>{filename}</filename><size><width>100</width><height>80</height></size>" \
           f"{objects}</annotation>"


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def wheel(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {stem: rng.integers(0, 256, (80, 100, 3), dtype=np.uint8) for stem in ("site_a", "site_b")}
    path = tmp_path / "tiny.whl"
    with zipfile.ZipFile(path, "w") as z:
        for stem, image in pixels.items():
            z.writestr(f"deepforest/data/{stem}.png", png(image))
            z.writestr(f"deepforest/data/{stem}.xml", voc(BOXES))
        z.writestr("deepforest/__init__.py", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), pixels


def test_tile_starts_cover_the_side_and_end_flush():
    assert treecrowns.tile_starts(100, 40, 20) == [0, 20, 40, 60]
    assert treecrowns.tile_starts(100, 40, 40) == [0, 40, 60]
    assert treecrowns.tile_starts(50, 40, 40) == [0, 10]
    assert treecrowns.tile_starts(30, 40, 20) == [0]


def test_cut_boxes_keeps_half_visible_crowns_and_ignores_the_rest():
    kept, crowd = treecrowns.cut_boxes(BOXES, 0, 0, 40, 40)
    assert kept == [(5, 5, 15, 15), (30, 5, 40, 15)]
    assert crowd == [(35, 20, 40, 30)]
    kept, crowd = treecrowns.cut_boxes(BOXES, 60, 40, 40, 40)
    assert kept == [(10, 10, 30, 35)] and crowd == []


def test_build_tiles_every_split_with_its_pixels_and_boxes(tmp_path, wheel):
    path, digest, pixels = wheel
    out = tmp_path / "treecrowns"
    assert treecrowns.build(path, out, tile=40, train_stride=20, splits=SPLITS, expected_sha256=digest)
    counts = {}
    for split in SPLITS:
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        counts[split] = len(coco.imgs)
        for image in coco.imgs.values():
            stem, x0, y0 = image["file_name"][:-4].rsplit("_", 2)
            x0, y0 = int(x0), int(y0)
            tile = np.asarray(Image.open(out / split / image["file_name"]))
            np.testing.assert_array_equal(tile, pixels[stem][y0:y0 + 40, x0:x0 + 40])  # the source's pixels
            kept, crowd = treecrowns.cut_boxes(BOXES, x0, y0, 40, 40)
            anns = coco.imgToAnns[image["id"]]
            assert sorted(tuple(a["bbox"]) for a in anns if not a["iscrowd"]) == \
                sorted((a, b, c - a, d - b) for a, b, c, d in kept)
            assert sum(a["iscrowd"] for a in anns) == len(crowd)
    # train overlaps (site a: x 0, 20, 40, 60; y 0, 20, 40; site b's 40 rows: y 0); val and test
    # cover their 50 x 40 px quarters once, the last column flush with the quarter's edge
    assert counts == {"train": 12 + 4, "val": 2, "test": 2}
    assert sorted(p.name for p in (out / "test").iterdir()) == ["site_b_50_40.png", "site_b_60_40.png"]
    dataset = CocoDetection(str(out / "train"), str(out / "annotations" / "instances_train.json"))
    image, target = dataset[0]  # the first tile: two crowns, the cut one left out
    assert image.shape == (3, 40, 40) and target["boxes"].tolist() == [[5, 5, 15, 15], [30, 5, 40, 15]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"] == digest and manifest["tile"] == 40
    assert not treecrowns.build(path, out, tile=40, train_stride=20, splits=SPLITS, expected_sha256=digest)
    assert treecrowns.build(path, out, tile=40, train_stride=40, splits=SPLITS, expected_sha256=digest)
    assert len(COCO(str(out / "annotations" / "instances_train.json")).imgs) == 3 * 2 + 3  # x 0, 40, 60; y 0, 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.whl", "treecrowns"]  # no staging left


def test_refuses_another_wheel_a_foreign_folder_and_bad_xml(tmp_path, wheel):
    path, digest, _ = wheel
    with pytest.raises(ValueError, match=f"sha256 {digest}, expected {treecrowns.WHEEL_SHA256}"):
        treecrowns.build(path, tmp_path / "out", splits=SPLITS)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine is not empty"):
        treecrowns.build(path, tmp_path / "mine", splits=SPLITS, expected_sha256=digest)
    with pytest.raises(FileNotFoundError, match="has no deepforest/data/elsewhere.png"):
        treecrowns.build(path, tmp_path / "out", splits={"train": (Region("elsewhere"),)}, expected_sha256=digest)
    with pytest.raises(ValueError, match=r"Region\(stem='site_a', x0=0, y0=0, x1=120.*not inside site_a.png \(100 x 80\)"):
        treecrowns.build(path, tmp_path / "out", splits={"train": (Region("site_a", x1=120),)}, expected_sha256=digest)
    with pytest.raises(ValueError, match="bad.xml: boxes without area"):
        treecrowns.read_voc(voc([(5, 5, 5, 9)]).encode(), "bad.xml")
    with pytest.raises(ValueError, match="broken.xml: not a Pascal VOC annotation"):
        treecrowns.read_voc(b"<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>",
                            "broken.xml")


def test_the_command_checks_the_pinned_sha256(tmp_path, wheel):
    path, digest, _ = wheel
    done = subprocess.run([sys.executable, "-m", "lab.make_treecrowns", "--wheel", str(path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode != 0
    assert f"sha256 {digest}, expected {treecrowns.WHEEL_SHA256}: not the pinned deepforest" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_layouts_keep_val_and_test_apart_from_training():
    def covered(regions, stem, size):
        mask = np.zeros(size[::-1], dtype=bool)
        for r in regions:
            if r.stem == stem:
                mask[r.y0:r.y1 or size[1], r.x0:r.x1 or size[0]] = True
        return mask

    sizes = {treecrowns.YELL_A: (2299, 2472), treecrowns.YELL_B: (1249, 1035), "OSBS_029": (400, 400),
             "SOAP_061": (400, 400)}
    for name, layout in treecrowns.LAYOUTS.items():
        assert set(layout) == {"train", "val", "test"}
        for stem, size in sizes.items():
            masks = [covered(layout[split], stem, size) for split in ("train", "val", "test")]
            assert not (masks[0] & masks[1]).any() and not (masks[0] & masks[2]).any() and not (masks[1] & masks[2]).any()
            assert (masks[0] | masks[1] | masks[2]).all(), (name, stem)  # every annotated pixel is used
    sites = treecrowns.LAYOUTS["sites"]
    assert {r.stem for r in sites["val"] + sites["test"]}.isdisjoint({r.stem for r in sites["train"]})
