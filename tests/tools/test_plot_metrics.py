"""tools/plot_metrics.py: reads metrics.jsonl (resumed duplicates, val records), draws a PNG, and
names a missing or malformed file."""
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.tool_loader import load_tool

plot_metrics = load_tool("plot_metrics")


def write_run(folder: Path, losses, ap=None):
    folder.mkdir()
    lines = [{"type": "train", "epoch": 1, "iter": i + 1, "lr": 0.01, "loss": v, "loss_loc": v / 2}
             for i, v in enumerate(losses)]
    lines.append({"type": "train", "epoch": 1, "iter": 2, "lr": 0.01, "loss": 9.0, "loss_loc": 4.5})  # replayed
    if ap is not None:
        lines.append({"type": "val", "epoch": 1, "iter": len(losses), "AP": ap, "AP50": ap * 2, "AP75": ap / 2})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return folder


def test_reads_the_last_record_of_each_iteration(tmp_path):
    run = write_run(tmp_path / "a", [3.0, 2.0, 1.0], ap=0.25)
    metrics = plot_metrics.read_metrics(str(run))
    assert sorted(metrics["train"]) == [1, 2, 3]
    assert metrics["train"][2]["loss"] == 9.0
    assert metrics["val"][3]["AP50"] == 0.5


def test_draws_the_runs_side_by_side(tmp_path):
    a = write_run(tmp_path / "dw", [3.0, 2.0, 1.0], ap=0.25)
    b = write_run(tmp_path / "fcos", [3.5, 2.5])
    out = tmp_path / "curves.png"
    plot_metrics.main([str(a), str(b / "metrics.jsonl"), "--out", str(out)])
    with Image.open(out) as image:
        assert image.width > 4 * image.height  # loss, loss_loc, lr and AP panels in a row


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        plot_metrics.read_metrics(str(tmp_path / "missing"))
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"type": "train", "iter": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        plot_metrics.read_metrics(str(bad))
