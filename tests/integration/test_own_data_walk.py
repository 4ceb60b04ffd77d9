"""The README's "Your own data" walk, as a user runs it on a CPU: a folder of COCO-format data
(category ids 3, 7, 12) -> tools/train.py with configs/own_data_cpu.py -> drawn detections from
tools/infer.py; plus what the README says about running the same command again. Made small: six
64 px images generated here, two epochs of two iterations, the backbone from scratch (no download)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dwdet.cli import train as train_cli
from tests.paths import ROOT

CATEGORIES = [{"id": 3, "name": "red"}, {"id": 7, "name": "green"}, {"id": 12, "name": "blue"}]
COLOURS = {3: (220, 30, 30), 7: (30, 200, 30), 12: (30, 30, 220)}


def make_split(root: Path, split: str, count: int, first_id: int) -> None:
    """``count`` 64x64 images with one or two filled rectangles, and their COCO annotation file."""
    rng = np.random.default_rng(first_id)
    (root / split).mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(first_id, first_id + count):
        pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
        for _ in range(1 + image_id % 2):
            category = int(rng.choice(list(COLOURS)))
            x, y = (int(v) for v in rng.integers(0, 32, 2))
            w, h = (int(v) for v in rng.integers(16, 32, 2))
            pixels[y:y + h, x:x + w] = COLOURS[category]
            annotations.append({"id": len(annotations) + 1 + 100 * first_id, "image_id": image_id, "iscrowd": 0,
                                "category_id": category, "bbox": [x, y, w, h], "area": w * h})
        name = f"{image_id:04d}.png"
        Image.fromarray(pixels).save(root / split / name)
        images.append({"id": image_id, "file_name": name, "width": 64, "height": 64})
    # one box partly outside the image, which training clips and counts
    annotations.append({"id": 9000 + first_id, "image_id": first_id, "iscrowd": 0, "category_id": 3,
                        "bbox": [50, 50, 30, 30], "area": 900})
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"{split}.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}))


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_from_a_folder_of_coco_data_to_drawn_detections(tmp_path):
    data, work_dir, out = tmp_path / "mine", tmp_path / "run", tmp_path / "out"
    make_split(data, "train", 4, 1)
    make_split(data, "val", 2, 101)
    # the README's command (its data paths are the config's example layout under data.root) ...
    train = ["tools/train.py", "configs/own_data_cpu.py", "--work-dir", str(work_dir), "--opts", f"data.root={data}",
             # ... made small for the test: no download, tiny images, two epochs of two iterations
             "model.backbone_weights=None", "model.min_size=64", "model.max_size=64", "train.epochs=2",
             "train.batch_size=2", "train.warmup_iters=2", "train.num_workers=0", "eval.interval=2",
             "eval.num_workers=0"]
    done = run(*train)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (work_dir / "train.log").read_text()
    assert "training set (" in log and "4 of 4 images; 1 boxes clipped to the image" in log
    assert "type=train epoch=2 iter=4" in log  # an epoch shorter than log_interval is still logged
    assert "COCO bbox metrics after epoch 2" in log and "| green" in log
    assert "finished at epoch 2, iteration 4" in log

    drawn = run("tools/infer.py", str(work_dir / "last.pth"), str(data / "val"), "--out-dir", str(out),
                "--score-thr", "0.0", "--opts", "model.score_thresh=0.0")  # every box of an untrained model
    assert drawn.returncode == 0, drawn.stdout[-3000:] + drawn.stderr[-3000:]
    pngs = sorted(out.glob("*.png"))  # one drawn picture per image, named after it
    assert len(pngs) == 2 and "0101" in pngs[0].name and "0102" in pngs[1].name
    assert Image.open(pngs[0]).size == (64, 64)
    results = json.loads((out / "results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {3, 7, 12}
    assert {r["category_name"] for r in results} <= {"red", "green", "blue"}

    # the run's AP50 on val sorted into TIDE's errors: the same AP50 as its own evaluation
    record = tmp_path / "tide.json"
    sorted_errors = run("tools/tide_errors.py", str(work_dir), "--split", "val", "--json", str(record))
    assert sorted_errors.returncode == 0, sorted_errors.stdout[-3000:] + sorted_errors.stderr[-3000:]
    found = json.loads(record.read_text())["errors"][str(work_dir)]
    logged = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert found["coco"]["AP50"] == [r for r in logged if r["type"] == "val"][-1]["AP50"]
    assert abs(found["tide"]["AP50"] - 100 * found["coco"]["AP50"]) <= 100 / 101
    assert set(found["tide"]) == {"AP50", "Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg"}

    # what DW's assignment sees for the run, recorded with the environment it was measured in
    record = tmp_path / "assign.json"
    measured = run("tools/assign_stats.py", str(work_dir), "--split", "val", "--json", str(record))
    assert measured.returncode == 0, measured.stdout[-3000:] + measured.stderr[-3000:]
    stats = json.loads(record.read_text())
    assert stats["split"] == "val" and {"git_revision", "cpu_capability"} <= set(stats["environment"])
    run_stats = stats["runs"][str(work_dir)]
    assert {"gts", "bag", "best IoU", "w_pos s8", "shared"} <= set(run_stats) and run_stats["gts"] >= 1

    # the same command again (here in this process, to save the start-up) is refused, naming
    # --resume; with --resume it says the run is complete
    arguments = [str(ROOT / train[1]), *train[2:]]
    assert train_cli.main(arguments) == 1
    assert "already holds a run" in (work_dir / "train.log").read_text()
    assert train_cli.main([*arguments, "--resume"]) == 0
    assert "the run has finished its 2 epochs" in (work_dir / "train.log").read_text()
