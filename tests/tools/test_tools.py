"""tools/train.py, tools/test.py and tools/infer.py end to end, with the stand-in detector and data
plugged into dwdet.engine.builders: checkpoints that describe themselves, outputs that are not
lost, --print-config."""
import io
import json
import logging
import os
import shutil
import tempfile

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from dwdet import Detector
from dwdet.config import load_config
from dwdet.engine import CheckpointError, builders, load_checkpoint
from dwdet.utils.visualize import PALETTE, caption_size, draw_detections
from tests import engine_helpers
from tests.demo_images import DEMO_MODEL, demo_images
from tests.engine_helpers import CATEGORY_IDS, tiny_config
from tests.tool_loader import load_tool


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    for name in ("build_model", "build_train_data", "build_val_data"):
        monkeypatch.setattr(builders, name, getattr(engine_helpers, name))
    tiny_config(tmp_path)
    return tmp_path / "tiny_config.py"


def test_train_then_test_then_infer(stand_ins, tmp_path, capsys):
    config, work_dir = str(stand_ins), tmp_path / "run"
    # the deprecated positional overrides still apply, before those of --opts, with a warning
    with pytest.warns(FutureWarning, match=r"overrides without --opts \(train.epochs=1\) are deprecated: write them "
                                           r"after --opts, e.g. --opts train.epochs=1"):
        assert load_tool("train").main([config, "train.epochs=1", "--opts", "train.log_interval=1",
                                        "--work-dir", str(work_dir)]) == 0
    assert "finished at epoch 1, iteration 4" in capsys.readouterr().out
    assert load_checkpoint(work_dir / "epoch_1.pth")["config"]["train"]["log_interval"] == 1
    # --resume without a value continues from last.pth: here the run is complete already.
    with pytest.warns(UserWarning, match="train.log_interval: 1 -> 2"):
        assert load_tool("train").main([config, "--opts", "train.epochs=1", "--work-dir", str(work_dir), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out

    checkpoint = load_checkpoint(work_dir / "last.pth")
    assert checkpoint["version"] == 2 and checkpoint["categories"] == [{"id": 3, "name": "c3"}, {"id": 7, "name": "c7"}]
    assert checkpoint["config"]["model"]["num_classes"] == 2

    # --out into folders that do not exist yet: they are created
    results_path = tmp_path / "new" / "folder" / "results.json"
    assert load_tool("test").main([config, str(work_dir / "epoch_1.pth"), "--out", str(results_path)]) == 0
    metrics = json.loads((work_dir / "metrics_epoch_1.json").read_text())
    logged = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in logged if r["type"] == "val"][0]
    assert metrics["AP"] == val["AP"] and metrics["AP_per_class"] == val["AP_per_class"]
    # what the figures depend on: the evaluation's batch (its padding reaches the features), the CPU
    assert metrics["environment"]["total_batch"] == 2 and metrics["environment"]["threads"] == torch.get_num_threads()
    assert set(metrics["AP_per_class"]) == {"c3", "c7"}
    results = json.loads(results_path.read_text())
    assert len(results) == 5 and {r["category_id"] for r in results} <= set(CATEGORY_IDS)
    assert "| class |" in capsys.readouterr().out  # the per-class table is printed

    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(20, 24), (16, 16)]):
        to_pil_image(torch.randint(0, 255, (3, h, w), dtype=torch.uint8)).save(images / f"img{i}.png")
    # infer from the checkpoint alone: no config, no dataset
    out_dir = tmp_path / "infer"
    monkeypatch_fail = pytest.MonkeyPatch()
    monkeypatch_fail.setattr(builders, "build_val_data", lambda cfg: pytest.fail("infer built a dataset"))
    try:
        assert load_tool("infer").main([str(work_dir / "last.pth"), str(images), "--out-dir", str(out_dir),
                                        "--score-thr", "0", "--device", "cpu", "--grid", str(tmp_path / "g" / "grid.png"),
                                        "--grid-columns", "2"]) == 0
    finally:
        monkeypatch_fail.undo()
    detections = json.loads((out_dir / "results.json").read_text())
    assert [d["file_name"] for d in detections] == [str(images / "img0.png"), str(images / "img1.png")]
    assert [d["image_id"] for d in detections] == [0, 1] and {d["category_id"] for d in detections} <= set(CATEGORY_IDS)
    assert all(d["category_name"] == f"c{d['category_id']}" for d in detections)
    drawn = pil_to_tensor(Image.open(out_dir / "00000_img0.png"))
    colour = torch.tensor([int(PALETTE[CATEGORY_IDS.index(detections[0]["category_id"])][i:i + 2], 16)
                           for i in (1, 3, 5)], dtype=torch.uint8)
    assert drawn.shape == (3, 20, 24) and (drawn == colour[:, None, None]).all(0).any()  # the class's colour
    # the grid: both drawings side by side, each padded to 20 x 24, 4 px of white around each
    grid = pil_to_tensor(Image.open(tmp_path / "g" / "grid.png"))
    assert grid.shape == (3, 4 + 20 + 4, 4 + 24 + 4 + 24 + 4)
    assert torch.equal(grid[:, 4:24, 4:28], drawn)
    second = pil_to_tensor(Image.open(out_dir / "00001_img1.png"))
    assert torch.equal(grid[:, 4:20, 32:48], second) and (grid[:, 20:24, 32:48] == 255).all()
    assert "detections drawn on 2 images" in capsys.readouterr().out


def test_old_checkpoints_get_a_clear_message_and_work_with_their_categories(stand_ins, tmp_path):
    work_dir = tmp_path / "run"
    assert load_tool("train").main([str(stand_ins), "--opts", "train.epochs=1", "eval.interval=0", "--work-dir",
                                    str(work_dir)]) == 0
    state = load_checkpoint(work_dir / "last.pth")
    old = {k: v for k, v in state.items() if k not in ("format", "version", "categories", "input")}
    torch.save({"format": "dwdet-checkpoint", "version": 1, **old}, tmp_path / "v1.pth")
    images = tmp_path / "img.png"
    to_pil_image(torch.zeros(3, 16, 16, dtype=torch.uint8)).save(images)
    with pytest.raises(CheckpointError, match=r"v1.pth does not carry its class names.*--categories"):
        load_tool("infer").main([str(tmp_path / "v1.pth"), str(images), "--out-dir", str(tmp_path / "o")])
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps({"images": [], "annotations": [],  # ids out of order: sorted gives labels
                                       "categories": [{"id": 7, "name": "c7"}, {"id": 3, "name": "c3"}]}))
    assert load_tool("infer").main([str(tmp_path / "v1.pth"), str(images), "--categories", str(annotations),
                                    "--out-dir", str(tmp_path / "o"), "--device", "cpu", "--score-thr", "0"]) == 0
    detections = json.loads((tmp_path / "o" / "results.json").read_text())
    assert detections and all(d["category_name"] == f"c{d['category_id']}" for d in detections)
    with pytest.raises(SystemExit, match="takes CHECKPOINT IMAGES"):
        load_tool("infer").main([str(stand_ins), str(tmp_path / "v1.pth"), str(images)])


def test_a_failed_write_says_where_the_results_went(stand_ins, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("dwdet"), "handlers", [caplog.handler])  # it does not propagate
    work_dir = tmp_path / "run"
    assert load_tool("train").main([str(stand_ins), "--opts", "train.epochs=1", "eval.interval=0", "--work-dir",
                                    str(work_dir)]) == 0
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert load_tool("test").main([str(stand_ins), str(work_dir / "last.pth"), "--out", str(blocker / "r.json"),
                                   "--work-dir", str(blocker / "metrics")]) == 0
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(messages) == 2 and all("could not write" in m and "instead" in m for m in messages)
    fallbacks = [m.rsplit(" ", 2)[-2] for m in messages]
    results, metrics = (json.loads(open(path).read()) for path in fallbacks)
    assert len(results) == 5 and "AP_per_class" in metrics  # nothing of the evaluation is lost
    for path in fallbacks:
        os.remove(path)


def test_print_config_shows_the_resolved_config(stand_ins, capsys):
    assert load_tool("train").main([str(stand_ins), "--opts", "train.lr=0.5", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.5 and printed["model"] == {"num_classes": 2, "dropout": 0.2}
    assert load_config(stand_ins, ["train.lr=0.5"]).to_dict() == {**printed, "train": {
        **printed["train"], "lr_steps": (1,), "adamw_betas": (0.9, 0.999)}}  # all of it (JSON has lists where the file has tuples)


def test_train_reports_a_bad_override(stand_ins, tmp_path, capsys):
    assert load_tool("train").main([str(stand_ins), "--opts", "train.lrr=0.1", "--work-dir", str(tmp_path / "run")]) == 1
    assert "ERROR dwdet.train: unknown config key 'train.lrr'" in capsys.readouterr().out


def test_infer_rejects_missing_inputs(stand_ins, tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        load_tool("infer").main(["x.pth", str(tmp_path / "nope.jpg")])


def test_export_keeps_what_inference_reads_and_drops_the_training_state(stand_ins, tmp_path, capsys):
    work_dir = tmp_path / "run"
    assert load_tool("train").main([str(stand_ins), "--opts", "train.epochs=1", "eval.interval=0", "--work-dir",
                                    str(work_dir)]) == 0
    source, out = work_dir / "last.pth", tmp_path / "shared" / "model.pth"
    assert load_tool("export_checkpoint").main([str(source), str(out), "--half"]) == 0
    assert f"exported {source} to {out}" in capsys.readouterr().out
    original, exported = load_checkpoint(source), load_checkpoint(out)
    assert {"optimizer", "rng", "progress"} <= set(original) and not {"optimizer", "rng", "progress"} & set(exported)
    for key in ("config", "categories", "input"):
        assert exported[key] == original[key]
    for name, value in original["model"].items():
        expected = value.half() if value.is_floating_point() else value
        assert exported["model"][name].dtype == expected.dtype and torch.equal(exported["model"][name], expected)
    model, _, categories = builders.load_detector(out)  # float32 parameters from the half-precision values
    assert categories == original["categories"]
    for name, value in model.state_dict().items():
        assert value.dtype == original["model"][name].dtype
        assert torch.equal(value, original["model"][name].half().to(value.dtype))
    # and the evaluation runs from the exported file as from the training checkpoint
    assert load_tool("test").main([str(stand_ins), str(out), "--work-dir", str(tmp_path / "eval")]) == 0


def test_export_refuses_an_old_checkpoint_naming_what_it_lacks(stand_ins, tmp_path):
    work_dir = tmp_path / "run"
    assert load_tool("train").main([str(stand_ins), "--opts", "train.epochs=1", "eval.interval=0", "--work-dir",
                                    str(work_dir)]) == 0
    ckpt = load_checkpoint(work_dir / "last.pth")
    del ckpt["categories"], ckpt["input"]
    old = tmp_path / "old.pth"
    torch.save(ckpt, old)
    with pytest.raises(CheckpointError, match=r"old\.pth lacks categories, input"):
        load_tool("export_checkpoint").main([str(old), str(tmp_path / "out.pth")])
    assert not (tmp_path / "out.pth").exists()


# dwdet-infer on the shipped demo model (no training needed): one inference path with dwdet.Detector,
# unreadable images skipped and named, outputs that are not lost, captions that can be read.

@pytest.fixture
def demo_folder(tmp_path):
    images, _ = demo_images(2, seed=3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"good{i}.png")
    return folder


@pytest.fixture
def dwdet_log(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("dwdet"), "handlers", [caplog.handler])  # it does not propagate
    return caplog


def test_infer_writes_what_the_api_predicts_and_says_how_many_are_drawn(demo_folder, tmp_path, dwdet_log):
    out = tmp_path / "out"
    assert load_tool("infer").main([DEMO_MODEL, str(demo_folder), "--out-dir", str(out), "--score-thr", "0.5",
                                    "--device", "cpu"]) == 0
    paths = sorted(demo_folder.iterdir())
    predicted = Detector.from_checkpoint(DEMO_MODEL, device="cpu").predict(paths)
    expected = [{"image_id": i, "file_name": str(path), "category_name": name, "score": score,
                 "bbox": [x1, y1, x2 - x1, y2 - y1]}
                for i, (path, found) in enumerate(zip(paths, predicted))
                for (x1, y1, x2, y2), score, name in zip(found.boxes.tolist(), found.scores.tolist(), found.class_names)]
    written = json.loads((out / "results.json").read_text())
    assert len(written) == len(expected) > 0
    for entry, want in zip(written, expected):
        assert {k: entry[k] for k in ("image_id", "file_name", "category_name")} == {
            k: want[k] for k in ("image_id", "file_name", "category_name")}
        assert entry["score"] == pytest.approx(want["score"], abs=1e-6)
        assert entry["bbox"] == pytest.approx(want["bbox"], abs=1e-3)
    drawn = sum(int((found.scores >= 0.5).sum()) for found in predicted)
    assert 0 < drawn < len(expected)
    assert (f"{len(expected)} detections on 2 images written to {out / 'results.json'}; {drawn} of them score at "
            f"least --score-thr 0.5") in dwdet_log.text
    assert sorted(p.name for p in out.glob("*.png")) == ["00000_good0.png", "00001_good1.png"]
    # a threshold above every score draws nothing, and the log says so instead of only "written"
    assert load_tool("infer").main([DEMO_MODEL, str(demo_folder), "--out-dir", str(out), "--score-thr", "0.999",
                                    "--device", "cpu"]) == 0
    best = max(e["score"] for e in written)
    assert f"no detection scores 0.999 or more (the best scores {best:.3f}): lower --score-thr" in dwdet_log.text


def test_infer_skips_unreadable_images_and_names_them(demo_folder, tmp_path, dwdet_log):
    (demo_folder / "garbage.jpg").write_bytes(b"this is not an image")
    jpeg = io.BytesIO()
    Image.fromarray(demo_images(1, seed=4)[0][0]).save(jpeg, format="JPEG")
    (demo_folder / "truncated.jpg").write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    out = tmp_path / "out"
    assert load_tool("infer").main([DEMO_MODEL, str(demo_folder), "--out-dir", str(out), "--device", "cpu"]) == 0
    warnings = [r.getMessage() for r in dwdet_log.records if r.levelname == "WARNING"]
    for name in ("garbage.jpg", "truncated.jpg"):
        assert any(f"cannot read the image {demo_folder / name}" in m for m in warnings)
    assert "2 of 4 images could not be read and were skipped" in dwdet_log.text
    results = json.loads((out / "results.json").read_text())  # the readable images' detections are kept
    assert {r["file_name"] for r in results} == {str(demo_folder / "good0.png"), str(demo_folder / "good1.png")}
    # ids are places in the sorted input list: garbage.jpg, good0.png, good1.png, truncated.jpg
    assert {r["image_id"] for r in results} == {1, 2}
    assert sorted(p.name for p in out.glob("*.png")) == ["00001_good0.png", "00002_good1.png"]
    # nothing readable: a failure, and no results file
    assert load_tool("infer").main([DEMO_MODEL, str(demo_folder / "garbage.jpg"), "--out-dir", str(tmp_path / "none"),
                                    "--device", "cpu"]) == 1
    assert "no image could be read" in dwdet_log.text and not (tmp_path / "none" / "results.json").exists()


def test_infer_writes_to_the_temporary_folder_when_the_output_path_is_blocked(demo_folder, tmp_path, dwdet_log):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert load_tool("infer").main([DEMO_MODEL, str(demo_folder), "--out-dir", str(blocker / "out"), "--device", "cpu",
                                    "--grid", str(blocker / "grid.png")]) == 0
    errors = [r.getMessage() for r in dwdet_log.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert errors[0].startswith(f"could not create the folder {blocker / 'out'}") and "instead" in errors[0]
    folder = errors[0].rsplit(" ", 2)[-2]
    assert errors[1].startswith(f"could not write {blocker / 'grid.png'}") and "instead" in errors[1]
    grid = errors[1].rsplit(" ", 2)[-2]
    try:
        assert os.path.dirname(folder) == tempfile.gettempdir()
        assert json.loads(open(os.path.join(folder, "results.json")).read())  # nothing is lost
        assert sorted(os.listdir(folder)) == ["00000_good0.png", "00001_good1.png", "results.json"]
        assert Image.open(grid).size[0] > 2 * 144
    finally:
        shutil.rmtree(folder)
        os.remove(grid)


def test_infer_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        load_tool("infer").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "lowest score drawn (results.json keeps all) (default: 0.3)" in text
    assert "(default: infer_out)" in text and "dwdet-infer work_dirs/dw/epoch_12.pth" in text
    assert f"cuda:1, ... (default: {'cuda' if torch.cuda.is_available() else 'cpu'})" in text


@pytest.mark.parametrize("size", [192, 800])
def test_captions_are_sized_to_the_image_and_sit_on_a_filled_box(size):
    image = torch.full((3, size, size), 128, dtype=torch.uint8)
    top = size // 2
    detections = {"boxes": torch.tensor([[size / 4, top, size * 3 / 4, size - 10]]), "scores": torch.tensor([0.9]),
                  "labels": torch.tensor([0])}
    drawn = draw_detections(image, detections, ["circle"], score_thr=0.5)
    colour = torch.tensor([int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5)], dtype=torch.uint8)
    filled = (drawn[:, :top] == colour[:, None, None]).all(0)  # above the box: the caption's background
    rows = filled.sum(1) >= 10
    assert rows.sum() >= caption_size(size, size) >= max(12, size // 40)
    caption = drawn[:, :top][:, rows]
    assert ((caption == 255).all(0) | (caption == 0).all(0)).any()  # white or black text on it


def test_test_evaluates_the_trained_weights_of_a_run_with_ema_on_request(stand_ins, tmp_path, monkeypatch):
    config, work_dir = str(stand_ins), tmp_path / "run"
    ema = ["train.epochs=1", "train.ema=True", "train.ema_decay=0.9", "train.ema_tau=2.0"]
    assert load_tool("train").main([config, "--opts", *ema, "--work-dir", str(work_dir)]) == 0
    ckpt = load_checkpoint(work_dir / "last.pth")
    for trained, key in ((False, "model"), (True, "train_model")):
        model, _, _ = builders.load_detector(work_dir / "last.pth", trained_weights=trained)
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], ckpt[key][k]) for k in ckpt[key])
    assert any(not torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in ckpt["model"])
    assert load_tool("test").main([config, str(work_dir / "last.pth"), "--trained-weights"]) == 0
    assert json.loads((work_dir / "metrics_last_trained.json").read_text())["checkpoint"] == str(work_dir / "last.pth")
    # a run without the average has nothing else to offer
    plain = tmp_path / "plain"
    assert load_tool("train").main([config, "--opts", "train.epochs=1", "--work-dir", str(plain)]) == 0
    with pytest.raises(CheckpointError, match="no weight average beside its trained weights"):
        builders.load_detector(plain / "last.pth", trained_weights=True)
    # the study tools ask every run for its trained weights: the averaged run gives them, the plain its only ones
    monkeypatch.setattr(builders, "build_dataset", lambda cfg, split, training=None: None)  # the stand-ins have no dataset type
    for run, key in ((work_dir, "train_model"), (plain, "model")):
        model, _, _ = builders.load_run(run, "val", trained_weights=True)
        expected = load_checkpoint(run / "last.pth")[key]
        assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
