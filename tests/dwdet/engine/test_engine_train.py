"""Single-process training: exact resume, SIGTERM, non-finite losses, AMP, logs and saved config."""
import json
import math
import subprocess

import pytest
import torch

from dwdet.config import load_config
from dwdet.engine import NonFiniteLossError, Trainer, load_checkpoint, runtime, save_checkpoint
from dwdet.engine import trainer as trainer_module
from tests.engine_helpers import BUILDERS, tiny_config
from tests.paths import ROOT


def run(tmp_path, name, overrides=(), resume=None):
    cfg = tiny_config(tmp_path, list(overrides))
    trainer = Trainer(cfg, tmp_path / name, resume=resume, **BUILDERS)
    return trainer, trainer.fit()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("full")
    trainer, result = run(tmp_path, "full", ["eval.interval=0"])
    return trainer, result, tmp_path / "full"


def test_uninterrupted_run_trains_and_keeps_epoch_checkpoints(uninterrupted):
    trainer, result, work_dir = uninterrupted
    assert result["status"] == "finished" and result["iteration"] == 2 * 4
    initial = Trainer(trainer.cfg, work_dir.parent / "init", **BUILDERS).model.state_dict()
    assert not same_weights(initial, trainer.model.state_dict())
    first = load_checkpoint(work_dir / "epoch_1.pth")
    assert first["progress"] == {"epoch": 1, "epoch_iter": 0, "iteration": 4}
    assert same_weights(load_checkpoint(work_dir / "last.pth")["model"], trainer.model.state_dict())


# 2 images per batch, 4 batches per epoch: stop after iteration 2 (mid-epoch 1), 4 (end of epoch 1), 6.
@pytest.mark.parametrize("sigterm_at", [3, 7, 11])
def test_sigterm_saves_and_resume_matches_uninterrupted_bitwise(tmp_path, uninterrupted, sigterm_at):
    full_trainer, _, _ = uninterrupted
    trainer, result = run(tmp_path, "stopped", ["eval.interval=0", f"data.sigterm_at={sigterm_at}"])
    assert result["status"] == "interrupted"
    ckpt = load_checkpoint(tmp_path / "stopped" / "last.pth")
    assert ckpt["progress"]["iteration"] == (sigterm_at + 1) // 2 < 8
    assert ckpt["progress"]["epoch_iter"] > 0
    assert not same_weights(trainer.model.state_dict(), full_trainer.model.state_dict())

    with pytest.warns(UserWarning, match="data.sigterm_at: .* -> None"):
        resumed, result = run(tmp_path, "stopped", ["eval.interval=0"], resume=tmp_path / "stopped" / "last.pth")
    assert result == {"status": "finished", "epoch": 2, "iteration": 8, "metrics": None}
    assert same_weights(resumed.model.state_dict(), full_trainer.model.state_dict())
    assert same_weights(resumed.optimizer.state_dict()["state"][0], full_trainer.optimizer.state_dict()["state"][0])


def test_resume_from_epoch_checkpoint_matches_bitwise(tmp_path, uninterrupted):
    full_trainer, _, work_dir = uninterrupted
    resumed, _ = run(tmp_path, "from_epoch1", ["eval.interval=0"], resume=work_dir / "epoch_1.pth")
    assert same_weights(resumed.model.state_dict(), full_trainer.model.state_dict())


def test_init_from_takes_the_weights_but_starts_the_schedule_afresh(tmp_path, uninterrupted):
    _, _, work_dir = uninterrupted
    source = load_checkpoint(work_dir / "epoch_1.pth")
    trainer = Trainer(tiny_config(tmp_path, [f"train.init_from={work_dir / 'epoch_1.pth'}", "eval.interval=0"]),
                      tmp_path / "init", **BUILDERS)
    assert same_weights(trainer.model.state_dict(), source["model"])
    assert trainer.progress.iteration == 0 and trainer.lr_scheduler.last_epoch == 0
    fresh = Trainer(tiny_config(tmp_path, ["eval.interval=0"]), tmp_path / "fresh", **BUILDERS)
    assert not same_weights(fresh.model.state_dict(), source["model"])
    other = tmp_path / "other.pth"
    save_checkpoint({**source, "model": {**source["model"], "cls.weight": torch.zeros(3, 8)}}, other)
    with pytest.raises(ValueError, match="train.init_from.*does not fit"):
        Trainer(tiny_config(tmp_path, [f"train.init_from={other}"]), tmp_path / "bad", **BUILDERS)


def test_resume_refuses_another_batch_size(tmp_path, uninterrupted):
    _, _, work_dir = uninterrupted
    with pytest.raises(RuntimeError, match="batch 2.*batch_size.*--allow-world-size-change"):
        Trainer(tiny_config(tmp_path, ["train.batch_size=3"]), tmp_path / "x", resume=work_dir / "last.pth",
                **BUILDERS)


def test_resume_refuses_another_optimizer(tmp_path, uninterrupted):
    _, _, work_dir = uninterrupted
    with pytest.raises(RuntimeError, match=r"last.pth was trained with train.optimizer='sgd'; this run has 'adamw'"):
        with pytest.warns(UserWarning, match="train.optimizer"):
            Trainer(tiny_config(tmp_path, ["train.optimizer=adamw"]), tmp_path / "x", resume=work_dir / "last.pth",
                    **BUILDERS)


def test_an_adamw_run_resumes_bitwise(tmp_path):
    overrides = ["eval.interval=0", "train.optimizer=adamw", "train.lr=1e-3", "train.weight_decay=0.05"]
    full, _ = run(tmp_path, "full", overrides)
    assert isinstance(full.optimizer, torch.optim.AdamW)
    resumed, result = run(tmp_path, "resumed", overrides, resume=tmp_path / "full" / "epoch_1.pth")
    assert result["iteration"] == 8 and same_weights(resumed.model.state_dict(), full.model.state_dict())


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # the reference schedule
def test_resume_on_another_total_batch_continues_at_the_same_point_with_a_warning(tmp_path):
    """Stopped after 2 batches of 2 images (mid-epoch 1): with batches of 1 the run continues
    after 4 batches, at the lr of iteration 4 of the new schedule, and finishes its 8 per epoch."""
    _, stopped = run(tmp_path, "stopped", ["eval.interval=0", "data.sigterm_at=3"])
    assert load_checkpoint(tmp_path / "stopped" / "last.pth")["progress"] == {"epoch": 0, "epoch_iter": 2,
                                                                                "iteration": 2}
    cfg = tiny_config(tmp_path, ["eval.interval=0", "train.batch_size=1"])
    with pytest.warns(UserWarning, match=r"with 1 x 1: not an exact resume.*epoch 1, batch 4"):
        trainer = Trainer(cfg, tmp_path / "stopped", resume=tmp_path / "stopped" / "last.pth",
                          allow_world_size_change=True, **BUILDERS)
    assert (trainer.progress.epoch, trainer.progress.epoch_iter, trainer.progress.iteration) == (0, 4, 4)
    fresh = Trainer(cfg, tmp_path / "fresh", **BUILDERS)
    for _ in range(4):
        fresh.lr_scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(fresh.optimizer.param_groups[0]["lr"])
    assert trainer.lr_scheduler.get_last_lr() == pytest.approx(fresh.lr_scheduler.get_last_lr())
    assert trainer.fit() == {"status": "finished", "epoch": 2, "iteration": 16, "metrics": None}


def test_metrics_log_and_saved_config(tmp_path):
    trainer, result = run(tmp_path, "logged", ["train.epochs=1"])
    records = [json.loads(line) for line in (tmp_path / "logged" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["iter"] for r in train] == [2, 4]  # log_interval=2
    assert {"loss", "loss_box", "loss_cls", "loss_neg", "lr", "grad_norm", "time", "data_time", "eta_s"} <= train[0].keys()
    assert train[0]["loss"] == pytest.approx(train[0]["loss_box"] + train[0]["loss_cls"] + train[0]["loss_neg"])
    # lr of iteration 2: base 0.16 * 2/16 scaled by the warmup factor at iteration 1 (0.1 + 0.9/3).
    assert train[0]["lr"] == pytest.approx(0.02 * 0.4)
    val = [r for r in records if r["type"] == "val"]
    assert len(val) == 1 and val[0]["epoch"] == 1 and val[0]["AP"] == result["metrics"]["AP"]
    assert 0.0 <= val[0]["AP"] <= 1.0
    saved = load_config(tmp_path / "logged" / "config.json")
    assert saved.to_dict() == json.loads(json.dumps(trainer.cfg.to_dict()))
    environment = json.loads((tmp_path / "logged" / "environment.json").read_text())
    assert environment["world_size"] == 1 and environment["threads"] == torch.get_num_threads()
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    assert environment["git_revision"] == (revision.stdout.strip() or None)
    assert environment["git_dirty"] in ((True, False) if revision.stdout else (None,))


@pytest.mark.parametrize("interval,epochs,logged", [
    (50, 3, [4, 8, 12]),  # epochs of 4 iterations, shorter than the interval: a record at each epoch's end
    (3, 2, [3, 4, 6, 8]),  # every 3 iterations of the run, and the rest of each epoch
])
def test_every_iteration_is_logged_whatever_the_epoch_length(tmp_path, interval, epochs, logged):
    run(tmp_path, "run", ["eval.interval=0", f"train.log_interval={interval}", f"train.epochs={epochs}"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["type"] == "train"] == logged
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"type=train epoch={epochs} iter={logged[-1]} " in log
    # and the effective lr, once, at the start
    assert "lr 0.02: train.lr=0.16 is for a total batch of 16; this run's is 2" in log


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # Image call 7 is the first of iteration 4; checkpoints are written after every iteration.
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 .*loss=nan.*train.nonfinite=skip"):
        run(tmp_path, "nan", ["eval.interval=0", "data.nan_at=7", "train.checkpoint_iters=1"])
    ckpt = load_checkpoint(tmp_path / "nan" / "last.pth")
    assert ckpt["progress"]["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


@pytest.mark.parametrize("amp,policy", [("none", "skip"), ("fp16", "stop")])
def test_nonfinite_loss_skipped(tmp_path, amp, policy):
    trainer, result = run(tmp_path, "skip", ["eval.interval=0", "data.nan_at=7", "train.log_interval=1",
                                             f"train.amp={amp}", f"train.nonfinite={policy}", "train.epochs=2"])
    assert result["status"] == "finished"
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    records = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["skipped"] for r in records]
    if amp == "fp16":  # the scaler also skips its first steps while it lowers the initial 2**16 scale
        assert skipped[2:] == [0, 1, 0, 0, 0, 0] and trainer.scaler.get_scale() < 2**16
    else:
        assert skipped == [0, 0, 0, 1, 0, 0, 0, 0]
    assert records[3]["lr"] > 0 and "loss" not in records[3]


def test_bf16_autocast_trains(tmp_path):
    trainer, result = run(tmp_path, "bf16", ["eval.interval=0", "train.epochs=1", "train.amp=bf16"])
    assert result["status"] == "finished"
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    assert not trainer.scaler.is_enabled()


@pytest.mark.parametrize("flags, expected", [("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_bf16", True),
                                             ("fpu avx2 avx512f", False), (None, None)])
def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n" + (f"flags\t\t: {flags}\n" if flags else ""))
    assert runtime.cpu_has_bf16(str(cpuinfo)) is expected
    assert runtime.cpu_has_bf16(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("amp, has_bf16, warned", [("bf16", False, True), ("bf16", True, False), ("bf16", None, False),
                                                   ("none", False, False)])
def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_about(tmp_path, monkeypatch, caplog, amp, has_bf16, warned):
    monkeypatch.setattr(trainer_module, "cpu_has_bf16", lambda: has_bf16)
    with caplog.at_level("WARNING", logger="dwdet.engine.trainer"):
        Trainer(tiny_config(tmp_path, ["eval.interval=0", f"train.amp={amp}"]), tmp_path / "run", **BUILDERS)
    assert ("train.amp=bf16 on a CPU without bf16 instructions" in caplog.text) is warned


def test_gradient_clipping_bounds_the_update(tmp_path):
    free, _ = run(tmp_path, "free", ["eval.interval=0", "train.epochs=1", "train.weight_decay=0.0",
                                     "train.sgd_momentum=0.0", "train.warmup_iters=0"])
    clipped, _ = run(tmp_path, "clip", ["eval.interval=0", "train.epochs=1", "train.weight_decay=0.0",
                                        "train.sgd_momentum=0.0", "train.warmup_iters=0", "train.clip_grad_norm=1e-3"])
    start = Trainer(tiny_config(tmp_path), tmp_path / "init", **BUILDERS).model.state_dict()

    def distance(trainer):
        return math.sqrt(sum(((trainer.model.state_dict()[k] - start[k]) ** 2).sum() for k in start))
    lr = 0.16 * 2 / 16
    assert distance(clipped) <= 4 * lr * 1e-3 * (1 + 1e-5)  # 4 steps of plain SGD, each at most lr * max_norm
    assert distance(free) > 10 * distance(clipped)


def test_loss_weights_scale_their_terms_in_the_step_and_not_in_the_log(tmp_path):
    plain = ["eval.interval=0", "train.epochs=1", "train.weight_decay=0.0", "train.sgd_momentum=0.0",
             "train.warmup_iters=0", "train.log_interval=1"]
    base, _ = run(tmp_path, "base", plain)
    records = [json.loads(line) for line in (tmp_path / "base" / "metrics.jsonl").read_text().splitlines()]
    terms = sorted(k for k in records[0] if k.startswith("loss_"))
    assert len(terms) >= 2
    # every term twice: plain SGD takes the steps of twice the lr
    doubled, _ = run(tmp_path, "doubled", [*plain, "train.loss_weights=" + repr({t: 2.0 for t in terms})])
    faster, _ = run(tmp_path, "faster", [*plain, "train.lr=0.32"])
    for key, value in faster.model.state_dict().items():
        torch.testing.assert_close(doubled.model.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    assert not same_weights(doubled.model.state_dict(), base.model.state_dict())
    # one term off: the first step's terms are logged as the loss returns them, the total as trained
    run(tmp_path, "one_off", [*plain, "train.loss_weights=" + repr({terms[0]: 0.0})])
    first = json.loads((tmp_path / "one_off" / "metrics.jsonl").read_text().splitlines()[0])
    assert {t: first[t] for t in terms} == {t: records[0][t] for t in terms}
    assert first["loss"] == pytest.approx(sum(first[t] for t in terms[1:]), rel=1e-5)
    with pytest.raises(ValueError, match=r"train.loss_weights names \['loss_bx'\], which the loss does not return; "
                                         r"its terms are \["):
        run(tmp_path, "typo", [*plain, "train.loss_weights={'loss_bx': 2.0}"])
    with pytest.raises(ValueError, match=r"train.loss_weights\['loss_box'\] must be a finite number >= 0"):
        run(tmp_path, "negative", [*plain, "train.loss_weights={'loss_box': -1.0}"])


def test_the_trainer_tells_a_model_with_set_epoch_each_epoch(tmp_path):
    epochs = []

    def build_model(cfg):
        model = BUILDERS["build_model"](cfg)
        model.set_epoch = epochs.append
        return model

    trainer = Trainer(tiny_config(tmp_path, ["eval.interval=0"]), tmp_path / "run", **{**BUILDERS, "build_model": build_model})
    assert trainer.fit()["status"] == "finished"
    assert epochs == [0, 1]


@pytest.mark.parametrize("name", ["tood", "dw"])
def test_the_detector_passes_the_epoch_to_a_loss_with_an_epoch_schedule(name):
    from dwdet.models import build_fcos
    from dwdet.losses import DWLoss, TOODLoss
    loss = TOODLoss(2) if name == "tood" else DWLoss(2, fcos_warmup_epochs=4)
    detector = build_fcos(2, loss, backbone="resnet10", backbone_weights=None, channels=32)
    detector.set_epoch(3)
    assert loss.epoch == 3 and loss.warming_up


def test_a_logged_term_is_averaged_over_the_steps_that_had_it():
    from dwdet.engine.loop import _LogWindow
    window = _LogWindow()  # a loss whose terms change at the end of its warm-up, mid-window
    window.add({"loss_ctr": 1.0, "loss": 2.0}, 0.1, 0.0)
    window.add(None, 0.1, 0.0)  # a skipped step
    window.add({"loss_cls_neg": 3.0, "loss": 4.0}, 0.1, 0.0)
    record = window.record()
    assert (record["loss_ctr"], record["loss_cls_neg"], record["loss"], record["skipped"]) == (1.0, 3.0, 3.0, 1)


def test_train_log_and_tensorboard_events_in_the_run_folder(tmp_path):
    trainer, result = run(tmp_path, "logged", ["train.epochs=1", "train.tensorboard=True"])
    log = (tmp_path / "logged" / "train.log").read_text()
    assert "[rank 0] INFO dwdet.engine.metrics: type=train epoch=1 iter=2" in log
    assert "COCO bbox metrics after epoch 1" in log and "| c3    |" in log  # the per-class table
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "logged" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert events.Scalars("val/AP")[0].value == pytest.approx(result["metrics"]["AP"])
    per_class = result["metrics"]["AP_per_class"]
    for name in ("c3", "c7"):
        if per_class[name] is not None:
            assert events.Scalars(f"val/AP_per_class/{name}")[0].value == pytest.approx(per_class[name])


def test_the_configs_log_to_tensorboard_by_default():
    configs = ROOT / "configs"
    assert load_config(configs / "dw_r50_fpn_1x_coco.py").train.tensorboard is True
    assert load_config(configs / "lab" / "dw_r18_synthetic.py").train.tensorboard is True


def test_an_untracked_file_makes_the_checkout_dirty(tmp_path):
    from dwdet.engine.runtime import checkout_state
    git = lambda *args: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,  # noqa: E731
                                       check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "a")
    revision, dirty = checkout_state(str(tmp_path))
    assert len(revision) == 40 and dirty is False
    (tmp_path / "new_module.py").write_text("y = 2\n")
    assert checkout_state(str(tmp_path)) == (revision, True)
    (tmp_path / ".gitignore").write_text("new_module.py\n.gitignore\n")
    assert checkout_state(str(tmp_path)) == (revision, False)  # ignored files are build outputs, not changes
