"""Optimiser parameter groups and the warmup + step schedule."""
import pytest
import torch
from torch import nn

from dwdet.engine.optim import build_lr_scheduler, build_optimizer, decay_free_parameters, scaled_lr


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.bn = nn.BatchNorm2d(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.scale = nn.Parameter(torch.tensor(1.0))


def test_norms_and_scales_get_no_weight_decay():
    head = Head()
    free = decay_free_parameters(head)
    assert free == {head.gn.weight, head.gn.bias, head.bn.weight, head.bn.bias, head.scale}
    optimizer = build_optimizer(head, "sgd", lr=0.01, weight_decay=1e-4, sgd_momentum=0.9, adamw_betas=(0.8, 0.99))
    decayed, not_decayed = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-4 and {id(p) for p in decayed["params"]} == {id(head.conv.weight),
                                                                                        id(head.conv.bias)}
    assert not_decayed["weight_decay"] == 0.0 and len(not_decayed["params"]) == 5  # frozen params left out
    assert optimizer.defaults["momentum"] == 0.9


def test_adamw_keeps_the_groups_and_takes_its_betas():
    head = Head()
    optimizer = build_optimizer(head, "adamw", lr=1e-3, weight_decay=0.05, sgd_momentum=0.7, adamw_betas=[0.8, 0.99])
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.8, 0.99)
    decayed, not_decayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and not_decayed["weight_decay"] == 0.0
    assert {id(p) for p in not_decayed["params"]} == {id(p) for p in decay_free_parameters(head)}


def test_unknown_optimizer_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="train.optimizer.*'adam'"):
        build_optimizer(Head(), "adam", lr=0.01, weight_decay=1e-4, sgd_momentum=0.9, adamw_betas=(0.9, 0.999))


def test_lr_scales_linearly_with_total_batch():
    assert scaled_lr(0.01, 16) == 0.01 and scaled_lr(0.01, 8) == 0.005 and scaled_lr(0.01, 32) == 0.02


def test_warmup_then_steps_at_epoch_boundaries():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_lr_scheduler(optimizer, iters_per_epoch=10, warmup_iters=4, warmup_ratio=0.001,
                                   step_epochs=[2, 3], gamma=0.1)
    lrs = []
    for _ in range(35):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected_warmup = [0.1 * (0.001 + 0.999 * i / 4) for i in range(4)]
    assert lrs[:4] == pytest.approx(expected_warmup)
    assert lrs[4:20] == pytest.approx([0.1] * 16)
    assert lrs[20:30] == pytest.approx([0.01] * 10) and lrs[30:] == pytest.approx([0.001] * 5)
