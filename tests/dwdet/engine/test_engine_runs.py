"""Starting, continuing and refusing runs as a user meets them: fine-tuning onto another class count,
a detector as backbone weights, resuming exported, finished and old checkpoints, keeping the last
N checkpoints, a rerun in a used folder, errors in train.log, and `--resume` followed by overrides."""
import json
import warnings

import pytest
import torch

from dwdet.cli import train as train_cli
from dwdet.cli.common import config_overrides
from dwdet.engine import CheckpointError, RunFolderInUseError, Trainer, check_new_run_folder, load_checkpoint, \
    save_checkpoint
from dwdet.engine.builders import build_model
from dwdet.engine.compat import ADDED_KEYS
from dwdet.models.backbone import build_resnet
from tests.engine_helpers import BUILDERS, TinyDataset, TinyBatchSampler, tiny_config
from tests.paths import ROOT

CONFIGS = ROOT / "configs"


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run of the tiny detector on 2 classes."""
    tmp_path = tmp_path_factory.mktemp("finished")
    trainer = Trainer(tiny_config(tmp_path, ["eval.interval=0"]), tmp_path / "run", **BUILDERS)
    trainer.fit()
    return trainer, tmp_path / "run"


class ThreeClasses(TinyDataset):
    categories = [{"id": c, "name": f"c{c}"} for c in (3, 7, 12)]


def three_class_data(cfg):
    return ThreeClasses(cfg.data.num_train, flip=False), TinyBatchSampler(cfg.data.num_train, cfg.train.batch_size, 0)


def test_init_from_another_class_count_reinitialises_only_the_classification_layer(tmp_path, finished, caplog):
    source_trainer, run_dir = finished
    builders = {**BUILDERS, "build_train_data": three_class_data}
    cfg = tiny_config(tmp_path, ["eval.interval=0", "model.num_classes=3", f"train.init_from={run_dir / 'last.pth'}"])
    fresh = Trainer(tiny_config(tmp_path, ["eval.interval=0", "model.num_classes=3"]), tmp_path / "fresh", **builders)
    with caplog.at_level("INFO", logger="dwdet"):
        tuned = Trainer(cfg, tmp_path / "tuned", **builders)
    source, weights = source_trainer.model.state_dict(), tuned.model.state_dict()
    for name, value in weights.items():
        expected = fresh.model.state_dict()[name] if name.startswith("cls.") else source[name]
        assert torch.equal(value, expected), name
    assert weights["cls.weight"].shape == (3, 8)
    assert "the classification layer (cls.bias, cls.weight) starts afresh" in caplog.text
    assert "has 2 classes, this run 3" in caplog.text
    assert tuned.fit()["status"] == "finished"

    # anything else that does not fit is still an error naming it
    bad = tmp_path / "bad.pth"
    ckpt = load_checkpoint(run_dir / "last.pth")
    save_checkpoint({**ckpt, "model": {**ckpt["model"], "box.weight": torch.zeros(5, 8)}}, bad)
    with pytest.raises(ValueError, match=r"train.init_from: .*bad.pth does not fit this model: box.weight: \(5, 8\) in "
                                         r"the checkpoint, \(4, 8\) here"):
        Trainer(tiny_config(tmp_path, ["eval.interval=0", "model.num_classes=3", f"train.init_from={bad}"]),
                tmp_path / "bad", **builders)


def test_a_detector_checkpoint_serves_as_backbone_weights(tmp_path):
    from dwdet.models import build_fcos
    detector = build_fcos(3, backbone="resnet10", backbone_weights=None, channels=32)
    config = {"model": {"backbone": "resnet10", "num_classes": 3}}
    path = tmp_path / "detector.pth"
    save_checkpoint({"model": detector.state_dict(), "config": config}, path)
    resnet = build_resnet("resnet10", str(path))
    body = {k[len("backbone.body."):]: v for k, v in detector.state_dict().items() if k.startswith("backbone.body.")}
    assert body and all(torch.equal(resnet.state_dict()[k], v) for k, v in body.items())
    with pytest.raises(ValueError, match="is a detector on a resnet10, but the config asks for resnet18"):
        build_resnet("resnet18", str(path))


def test_offline_imagenet_weights_fail_with_a_hint_naming_the_config_key(tmp_path, monkeypatch):
    from dwdet.config import load_config
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # a closed port: the download fails at once
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    cfg = load_config(CONFIGS / "dw_r50_fpn_1x_coco.py", ["model.num_classes=3", "model.backbone=resnet18"])
    with pytest.raises(RuntimeError, match=r"^config key model.backbone_weights='IMAGENET1K_V1': downloading these "
                                           r"torchvision weights failed .*Offline, put the file into .*checkpoints"):
        build_model(cfg)


@pytest.mark.parametrize("override,message", [("model.refine=True", "model.refine=True: torchvision's FCOS has no box"),
                                              ("model.objectness_power=0.0", "model.objectness_power: torchvision's FCOS")])
def test_options_of_our_detector_are_refused_for_torchvisions(override, message):
    from dwdet.config import load_config
    cfg = load_config(CONFIGS / "dw_r50_fpn_1x_coco.py", ["model.num_classes=3", "model.type=torchvision_fcos",
                                                          "model.backbone=resnet18", "model.backbone_weights=None",
                                                          override])
    with pytest.raises(ValueError, match=message):
        build_model(cfg)


def test_resuming_an_exported_checkpoint_says_to_use_init_from(tmp_path, finished):
    _, run_dir = finished
    ckpt = load_checkpoint(run_dir / "last.pth")
    exported = tmp_path / "exported.pth"
    save_checkpoint({key: ckpt[key] for key in ("model", "config", "categories", "input")}, exported)
    with pytest.raises(CheckpointError, match=r"holds weights only .* train.init_from=.*exported.pth"):
        Trainer(tiny_config(tmp_path, ["eval.interval=0"]), tmp_path / "run", resume=exported, **BUILDERS)


def test_resuming_a_finished_run_says_it_has_finished(tmp_path, finished, caplog):
    trainer, run_dir = finished
    with caplog.at_level("INFO", logger="dwdet"):
        resumed = Trainer(tiny_config(tmp_path, ["eval.interval=0"]), run_dir, resume=run_dir / "last.pth", **BUILDERS)
        assert resumed.fit() == {"status": "finished", "epoch": 2, "iteration": 8, "metrics": None}
    assert "the run has finished its 2 epochs (iteration 8); nothing to train" in caplog.text
    assert "epoch 3" not in caplog.text
    assert same_weights(resumed.model.state_dict(), trainer.model.state_dict())


def test_a_checkpoint_of_an_older_version_resumes_with_the_keys_added_and_renamed_since(tmp_path, finished):
    trainer, run_dir = finished
    ckpt = load_checkpoint(run_dir / "epoch_1.pth")
    config = json.loads(json.dumps(ckpt["config"]))
    for dotted in ADDED_KEYS:
        section, key = dotted.split(".")
        config.get(section, {}).pop(key, None)
    # train.momentum was SGD's momentum and AdamW's beta1 before it became two keys
    assert config["train"].pop("adamw_betas") == [0.9, 0.999]
    config["train"]["momentum"] = config["train"].pop("sgd_momentum")
    old = tmp_path / "old.pth"
    save_checkpoint({**ckpt, "config": config}, old)
    migrated = load_checkpoint(old)["config"]
    assert migrated["train"]["optimizer"] == "sgd" and migrated["train"]["ema"] is False
    assert migrated["model"]["type"] == "fcos"
    assert migrated["train"]["sgd_momentum"] == 0.9 and migrated["train"]["adamw_betas"] == (0.9, 0.999)
    assert "momentum" not in migrated["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a saved run's old names are no user's to change
        resumed = Trainer(tiny_config(tmp_path, ["eval.interval=0"]), tmp_path / "resumed", resume=old, **BUILDERS)
    resumed.fit()
    assert same_weights(resumed.model.state_dict(), trainer.model.state_dict())


def test_keep_checkpoints_keeps_the_newest_epoch_checkpoints(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, ["eval.interval=0", "train.epochs=4", "train.keep_checkpoints=2"]),
                      tmp_path / "run", **BUILDERS)
    trainer.fit()
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pth")) == ["epoch_3.pth", "epoch_4.pth", "last.pth"]


def test_a_new_run_in_a_folder_that_holds_one_is_refused(tmp_path, finished):
    _, run_dir = finished
    with pytest.raises(RunFolderInUseError, match=r"already holds a run \(last.pth, metrics.jsonl\): continue it "
                                                  r"with --resume, or give this run another --work-dir"):
        check_new_run_folder(run_dir)
    check_new_run_folder(tmp_path / "new")  # an unused or missing folder is fine

    # the command refuses before touching anything, and says so in the folder's train.log
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != "train.log"}
    assert train_cli.main([str(CONFIGS / "lab" / "dw_r18_synthetic.py"), "--work-dir", str(run_dir)]) == 1
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != "train.log"} == before
    assert "already holds a run" in (run_dir / "train.log").read_text()


def test_errors_that_end_a_run_are_in_train_log(tmp_path):
    work_dir = tmp_path / "run"
    missing = tmp_path / "nowhere"
    assert train_cli.main([str(CONFIGS / "dw_r50_fpn_1x_coco.py"), "--opts", f"data.root={missing}", "--work-dir",
                           str(work_dir)]) == 1
    assert f"ERROR dwdet.train: annotation file {missing}/annotations/instances_train2017.json does not exist" in \
        (work_dir / "train.log").read_text()
    typo = tmp_path / "typo.py"
    typo.write_text(f"_base_ = {str(CONFIGS / 'dw_r50_fpn_1x_coco.py')!r}\ntrain = dict(lrr=0.05)\n")
    assert train_cli.main([str(typo), "--work-dir", str(work_dir)]) == 1
    assert "unknown config key 'train.lrr'; did you mean 'lr'?" in (work_dir / "train.log").read_text()


def test_overrides_after_a_bare_resume_are_overrides():
    args = train_cli.parse_args(["configs/x.py", "--resume", "--opts", "train.lr=0.1", "train.epochs=3"])
    assert args.resume == "auto" and config_overrides(args) == ["train.lr=0.1", "train.epochs=3"]
    # the deprecated spelling without --opts, too
    args = train_cli.parse_args(["configs/x.py", "--resume", "train.lr=0.1", "train.epochs=3"])
    with pytest.warns(FutureWarning, match="without --opts"):
        assert args.resume == "auto" and sorted(config_overrides(args)) == ["train.epochs=3", "train.lr=0.1"]
    args = train_cli.parse_args(["configs/x.py", "--resume", "work_dirs/a/epoch_3.pth", "--opts", "train.lr=0.1"])
    assert args.resume == "work_dirs/a/epoch_3.pth" and config_overrides(args) == ["train.lr=0.1"]


def test_print_config_shows_the_number_of_classes_training_will_take(tmp_path, capsys):
    (tmp_path / "annotations").mkdir()
    categories = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}, {"id": 12, "name": "c"}]
    (tmp_path / "annotations" / "train.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": categories}))
    assert train_cli.main([str(CONFIGS / "own_data_cpu.py"), "--opts", f"data.root={tmp_path}", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["num_classes"] == 3


def test_an_unreadable_image_ends_the_run_with_its_name_in_train_log(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "0001.png").write_bytes(b"not a png")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "0001.png", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [8, 8, 20, 20], "iscrowd": 0}],
        "categories": [{"id": 3, "name": "a"}]}))
    work_dir = tmp_path / "run"
    assert train_cli.main([str(CONFIGS / "own_data_cpu.py"), "--work-dir", str(work_dir), "--opts", f"data.root={tmp_path}",
                           "model.backbone_weights=None", "model.min_size=64", "model.max_size=64",
                           "train.batch_size=1", "train.num_workers=0", "eval.interval=0"]) == 1
    log = (work_dir / "train.log").read_text()
    assert "ERROR dwdet.train: training failed" in log and f"cannot read image {tmp_path}/train/0001.png" in log


def test_init_from_an_80_class_detector_onto_3_classes_keeps_all_but_its_class_logits(tmp_path, caplog):
    from dwdet.engine.builders import init_weights
    from dwdet.models import build_fcos
    torch.manual_seed(0)
    coco = build_fcos(80, backbone="resnet10", backbone_weights=None, channels=32)
    path = tmp_path / "coco.pth"
    save_checkpoint({"model": coco.state_dict(), "categories": [{"id": i, "name": str(i)} for i in range(80)],
                     "config": {"model": {"num_classes": 80}}}, path)
    mine = build_fcos(3, backbone="resnet10", backbone_weights=None, channels=32)
    fresh = {k: v.clone() for k, v in mine.state_dict().items()}
    with caplog.at_level("INFO", logger="dwdet"):
        init_weights(mine, str(path), 3)
    kept_fresh = sorted(k for k, v in mine.state_dict().items() if not torch.equal(v, coco.state_dict()[k]))
    assert kept_fresh == ["head.cls_logits.bias", "head.cls_logits.weight"]
    assert all(torch.equal(mine.state_dict()[k], fresh[k]) for k in kept_fresh)
    assert "(head.cls_logits.bias, head.cls_logits.weight) starts afresh" in caplog.text


def test_weights_saved_with_the_head_branch_named_centerness_load_as_objectness():
    from dwdet.engine.builders import load_detector
    shipped = ROOT / "weights" / "dw_r10_shapes16_demo.pth"
    raw = torch.load(shipped, map_location="cpu", weights_only=True)["model"]
    assert "head.centerness.weight" in raw  # written before the branch was named for what it holds
    migrated = load_checkpoint(shipped)["model"]
    assert list(migrated) == [name.replace("head.centerness.", "head.objectness.") for name in raw]
    model, _, _ = load_detector(shipped)  # strict: every weight in its place
    assert torch.equal(model.head.objectness.weight, raw["head.centerness.weight"])
    assert torch.equal(model.head.objectness.bias, raw["head.centerness.bias"])
