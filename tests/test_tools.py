"""tools/train.py, tools/test.py and tools/infer.py end to end, with the stand-in detector and data
plugged into dwdet.engine.builders."""
import importlib.util
import json
import os
import sys

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from dwdet.engine import builders, load_checkpoint
from tests import engine_helpers
from tests.engine_helpers import CATEGORY_IDS, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    for name in ("build_model", "build_train_data", "build_val_data"):
        monkeypatch.setattr(builders, name, getattr(engine_helpers, name))
    tiny_config(tmp_path)
    return tmp_path / "tiny_config.py"


def test_train_then_test_then_infer(stand_ins, tmp_path, capsys):
    config, work_dir = str(stand_ins), tmp_path / "run"
    assert load_tool("train").main([config, "train.epochs=1", "--opts", "train.log_interval=1",
                                    "--work-dir", str(work_dir)]) == 0
    assert "finished at epoch 1, iteration 4" in capsys.readouterr().out
    assert load_checkpoint(work_dir / "epoch_1.pth")["config"]["train"]["log_interval"] == 1
    # --resume without a value continues from last.pth: here the run is complete already.
    with pytest.warns(UserWarning, match="train.log_interval: 1 -> 2"):
        assert load_tool("train").main([config, "train.epochs=1", "--work-dir", str(work_dir), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out

    results_path = tmp_path / "results.json"
    assert load_tool("test").main([config, str(work_dir / "epoch_1.pth"), "--out", str(results_path)]) == 0
    metrics = json.loads((work_dir / "metrics_epoch_1.json").read_text())
    logged = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics["AP"] == [r for r in logged if r["type"] == "val"][0]["AP"]
    results = json.loads(results_path.read_text())
    assert len(results) == 5 and {r["category_id"] for r in results} <= set(CATEGORY_IDS)

    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(20, 24), (16, 16)]):
        to_pil_image(torch.randint(0, 255, (3, h, w), dtype=torch.uint8)).save(images / f"img{i}.png")
    out_dir = tmp_path / "infer"
    assert load_tool("infer").main([config, str(work_dir / "last.pth"), str(images), "--out-dir", str(out_dir),
                                    "--score-thr", "0", "--device", "cpu"]) == 0
    detections = json.loads((out_dir / "results.json").read_text())
    assert [d["file_name"] for d in detections] == [str(images / "img0.png"), str(images / "img1.png")]
    assert [d["image_id"] for d in detections] == [0, 1] and {d["category_id"] for d in detections} <= set(CATEGORY_IDS)
    drawn = pil_to_tensor(Image.open(out_dir / "00000_img0.png"))
    red = (drawn[0] == 255) & (drawn[1] == 0) & (drawn[2] == 0)
    assert drawn.shape == (3, 20, 24) and red.any()


def test_train_reports_a_bad_override(stand_ins):
    with pytest.raises(ValueError, match="unknown config key 'train.lrr'"):
        load_tool("train").main([str(stand_ins), "train.lrr=0.1"])


def test_infer_rejects_missing_inputs(stand_ins, tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        load_tool("infer").main([str(stand_ins), "x.pth", str(tmp_path / "nope.jpg")])
