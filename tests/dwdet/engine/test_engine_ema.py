"""The weight average (train.ema): its formula against a plain re-computation, what the trainer
evaluates and saves with it, and an exact resume of the average."""
import math

import pytest
import torch
from torch import nn

from dwdet.engine import Trainer, load_checkpoint
from dwdet.engine.ema import ModelEMA
from tests.engine_helpers import BUILDERS, tiny_config

EMA = ["train.ema=True", "train.ema_decay=0.9", "train.ema_tau=2.0"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.register_buffer("stat", torch.zeros(2))


def test_the_average_follows_its_formula_with_the_warm_up():
    torch.manual_seed(0)
    model = Net()
    ema = ModelEMA(model, decay=0.8, tau=3.0)
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    for step in range(1, 8):
        with torch.no_grad():
            model.lin.weight.add_(torch.randn(2, 3))
            model.lin.bias.add_(torch.randn(2))
            model.stat.add_(1.0)
        ema.update()
        d = 0.8 * (1 - math.exp(-step / 3.0))
        assert ema.current_decay() == pytest.approx(d)
        for name in ("lin.weight", "lin.bias"):
            expected[name] = d * expected[name] + (1 - d) * model.state_dict()[name].double()
        expected["stat"] = model.stat.double().clone()
    for name, value in ema.state_dict().items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-6, atol=1e-6)
    assert ema.updates == 7 and torch.equal(ema.module.stat, torch.full((2,), 7.0))
    assert not torch.equal(ema.module.lin.weight, model.lin.weight)  # it averages, it does not copy
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_the_first_update_copies_and_bad_settings_name_their_key():
    model = Net()
    ema = ModelEMA(model, decay=0.9998, tau=2000.0)
    with torch.no_grad():
        model.lin.weight.fill_(3.0)
    ema.update()  # d = 0.9998 * (1 - exp(-1/2000)): almost all of the new weights
    torch.testing.assert_close(ema.module.lin.weight, torch.full((2, 3), 3.0), atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="train.ema_decay"):
        ModelEMA(model, decay=1.0, tau=10.0)
    with pytest.raises(ValueError, match="train.ema_tau"):
        ModelEMA(model, decay=0.99, tau=0.0)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ema")
    trainer = Trainer(tiny_config(tmp_path, EMA + ["eval.interval=2"]), tmp_path / "run", **BUILDERS)
    return trainer, trainer.fit(), tmp_path / "run"


def test_checkpoints_carry_the_average_for_inference_and_the_trained_weights_for_resuming(ema_run):
    trainer, result, work_dir = ema_run
    assert trainer.ema.updates == 8
    assert not same_weights(trainer.ema.state_dict(), trainer.model.state_dict())
    ckpt = load_checkpoint(work_dir / "last.pth")
    assert same_weights(ckpt["model"], trainer.ema.state_dict())
    assert same_weights(ckpt["train_model"], trainer.model.state_dict())
    assert ckpt["ema_updates"] == 8
    # the evaluation during training is of the average
    seen = []
    hooks = [m.register_forward_hook(lambda module, *_: seen.append(module)) for m in (trainer.model, trainer.ema.module)]
    assert trainer.evaluate() == result["metrics"]
    assert seen == [trainer.ema.module] * 3  # 5 images in batches of 2
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("sigterm_at", [3, 9])  # mid-epoch 1; mid-epoch 2
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one_average_included(tmp_path, ema_run, sigterm_at):
    full, _, _ = ema_run
    overrides = EMA + ["eval.interval=2"]
    stopped = Trainer(tiny_config(tmp_path, overrides + [f"data.sigterm_at={sigterm_at}"]), tmp_path / "run",
                      **BUILDERS)
    assert stopped.fit()["status"] == "interrupted"
    with pytest.warns(UserWarning, match="data.sigterm_at"):
        resumed = Trainer(tiny_config(tmp_path, overrides), tmp_path / "run", resume=tmp_path / "run" / "last.pth",
                          **BUILDERS)
    assert resumed.ema.updates == (sigterm_at + 1) // 2
    resumed.fit()
    assert resumed.ema.updates == 8
    assert same_weights(resumed.model.state_dict(), full.model.state_dict())
    assert same_weights(resumed.ema.state_dict(), full.ema.state_dict())


def test_ema_switched_on_when_resuming_a_run_without_it_starts_from_its_weights(tmp_path):
    plain = Trainer(tiny_config(tmp_path, ["eval.interval=0", "train.epochs=1"]), tmp_path / "plain", **BUILDERS)
    plain.fit()
    resumed = Trainer(tiny_config(tmp_path, ["eval.interval=0"] + EMA), tmp_path / "plain",
                      resume=tmp_path / "plain" / "last.pth", **BUILDERS)
    assert resumed.ema.updates == 0
    assert same_weights(resumed.ema.state_dict(), plain.model.state_dict())
    # and the other way: a run with EMA resumed without it continues from the trained weights
    with_ema = Trainer(tiny_config(tmp_path, ["eval.interval=0", "train.epochs=1"] + EMA), tmp_path / "ema",
                       **BUILDERS)
    with_ema.fit()
    without = Trainer(tiny_config(tmp_path, ["eval.interval=0"]), tmp_path / "ema",
                      resume=tmp_path / "ema" / "last.pth", **BUILDERS)
    assert without.ema is None and same_weights(without.model.state_dict(), with_ema.model.state_dict())


def test_init_from_a_run_with_ema_starts_from_its_average(tmp_path, ema_run):
    trainer, _, work_dir = ema_run
    started = Trainer(tiny_config(tmp_path, ["eval.interval=0", f"train.init_from={work_dir / 'last.pth'}"]),
                      tmp_path / "init", **BUILDERS)
    assert same_weights(started.model.state_dict(), trainer.ema.state_dict())


def test_the_average_of_the_real_detector_covers_every_weight_and_buffer():
    from dwdet.models import build_fcos
    torch.manual_seed(0)
    model = build_fcos(3, backbone="resnet10", backbone_weights=None, channels=32)
    ema = ModelEMA(model, decay=0.5, tau=1e-9)  # d = 0.5 from the first update
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
        model.backbone.body.bn1.running_mean.add_(2.0)  # a frozen BatchNorm statistic: a buffer
    ema.update()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert trainable and frozen and ema.state_dict().keys() == before.keys()
    for name, value in ema.state_dict().items():
        expected = before[name] + 0.5 if name in trainable else model.state_dict()[name]
        torch.testing.assert_close(value, expected, msg=name)


def test_the_average_leaves_the_training_trajectory_untouched(tmp_path, ema_run):
    """A run with train.ema ends with the trained weights of the same run without it, so one run
    measures both (the study of the average pairs each run with itself)."""
    trainer, _, _ = ema_run
    plain = Trainer(tiny_config(tmp_path, ["eval.interval=2"]), tmp_path / "plain", **BUILDERS)
    plain.fit()
    assert same_weights(plain.model.state_dict(), trainer.model.state_dict())
