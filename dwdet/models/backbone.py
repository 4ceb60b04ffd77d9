"""ResNet / ResNeXt backbone with an FPN giving P3-P7.

The backbone follows the released DW model: torchvision ResNets with every BatchNorm replaced by
FrozenBatchNorm2d and the stem and stage 1 frozen; the FPN has P3-P5 from C3-C5 and P6/P7 from
P5's output, with a ReLU before P7's conv.
"""
import os
from typing import Optional, Union

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet, WeightsEnum
from torchvision.models.resnet import BasicBlock
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnext101_64x4d")
# Backbones torchvision has no builder (and no weights) for: one BasicBlock per stage, half of
# ResNet-18's depth and twice its speed, for CPU-sized benchmarks.
CUSTOM_RESNETS = {"resnet10": (BasicBlock, [1, 1, 1, 1])}
BACKBONE_FORMAT = "dwdet-backbone"  # the "format" entry of a file written by lab/pretrain_backbone.py
DETECTOR_FORMAT = "dwdet-checkpoint"  # that of a detector checkpoint (dwdet.engine.checkpoint)
DETECTOR_BACKBONE = "backbone.body."  # the prefix of the ResNet's weights in a detector's state dict
STAGE_MODULES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))  # stem, stages 1-4
Weights = Union[None, str, os.PathLike, WeightsEnum]


NORMS = ("frozen_bn", "gn", "bn")
NORM_LAYERS = {"frozen_bn": FrozenBatchNorm2d, "gn": lambda channels: nn.GroupNorm(32, channels), "bn": nn.BatchNorm2d}


def build_resnet(name: str, weights: Weights = None, norm: str = "frozen_bn", frozen_stages: int = 1) -> ResNet:
    """A torchvision ResNet/ResNeXt with frozen BatchNorm and a frozen stem and stage 1.

    Args:
        name: one of :data:`BACKBONES`.
        weights: None for random init; a torchvision weights name or enum of that model (e.g.
            ``"IMAGENET1K_V1"``, ``"DEFAULT"``; downloaded to torchvision's cache on first use); or
            the path of a local checkpoint: a backbone file of ``lab/pretrain_backbone.py``
            (which names its architecture, checked against ``name``), a detector checkpoint of
            dwdet (its backbone's weights), or a file holding the ResNet's state dict (the
            classifier ``fc.*`` may be absent).
        norm: ``"frozen_bn"`` (the paper's, for pretrained weights) or ``"gn"``: trainable
            GroupNorm(32) everywhere and nothing frozen, for training from scratch; or ``"bn"``:
            trainable BatchNorm, nothing frozen, for pretraining a backbone
            (``lab.pretrain``).
        frozen_stages: with ``"frozen_bn"``, the stem and stages 1 .. ``frozen_stages`` get no
            gradient (MMDetection's meaning: -1 none, 0 the stem, 1 the released model's stem and
            stage 1, 4 the whole backbone); the other norms train everything.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    if norm not in NORMS:
        raise ValueError(f"unknown backbone norm {norm!r}; choose one of {NORMS}")
    if not (isinstance(frozen_stages, int) and -1 <= frozen_stages <= 4):
        raise ValueError(f"frozen_stages must be an integer in [-1, 4] (-1: none, 4: all), got {frozen_stages!r}")
    path = os.fspath(weights) if _is_checkpoint_path(weights) else None
    if path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"backbone checkpoint {path!r} does not exist")
    norm_layer = NORM_LAYERS[norm]
    if name in CUSTOM_RESNETS:
        if weights is not None and path is None:
            raise ValueError(f"{name} has no torchvision weights ({weights!r}); use None or the path of a "
                             "backbone file (lab/pretrain_backbone.py writes one)")
        model = ResNet(*CUSTOM_RESNETS[name], norm_layer=norm_layer)
    else:
        model = torchvision.models.get_model(name, weights=None if path else _verify_weights(name, weights),
                                             norm_layer=norm_layer)
    if path is not None:
        _load_checkpoint(model, path, name)
    if norm == "frozen_bn":
        for stage in STAGE_MODULES[:frozen_stages + 1]:
            for module_name in stage:
                getattr(model, module_name).requires_grad_(False)
    return model


def build_backbone(name: str = "resnet50", weights: Weights = None, out_channels: int = 256,
                   norm: str = "frozen_bn", frozen_stages: int = 1) -> BackboneWithFPN:
    """ResNet + FPN returning five maps (P3-P7, strides 8-128) of ``out_channels`` channels.

    The output is an ordered dict (keys ``"0", "1", "2", "p6", "p7"``); see :func:`build_resnet`
    for ``name``, ``weights`` and ``frozen_stages``."""
    resnet = build_resnet(name, weights, norm, frozen_stages)
    c5_channels = resnet.inplanes  # channels of the last stage's output
    fpn = BackboneWithFPN(resnet, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
                          in_channels_list=[c5_channels // 4, c5_channels // 2, c5_channels],
                          out_channels=out_channels,
                          # in == out channels makes P6 come from P5 (use_P5), not from C5
                          extra_blocks=LastLevelP6P7(out_channels, out_channels))
    for module in fpn.fpn.modules():  # the released model's FPN init (xavier uniform, zero bias)
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return fpn


def _is_checkpoint_path(weights: Weights) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (os.sep in weights or weights.endswith((".pth", ".pt")))


def _verify_weights(name: str, weights: Union[None, str, WeightsEnum]) -> Optional[WeightsEnum]:
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum.verify(weights)
    except (KeyError, TypeError) as error:
        choices = [w.name for w in enum] + ["DEFAULT"]
        raise ValueError(f"weights {weights!r} are not weights of {name}; use None, one of {choices} "
                         "or the path of a local checkpoint (.pth)") from error


def _load_checkpoint(model: ResNet, path: str, name: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, ...
        raise ValueError(f"backbone checkpoint {path!r} cannot be read ({type(error).__name__}: {error}); "
                         "re-create it (lab/pretrain_backbone.py) or fix the path") from error
    if not isinstance(state, dict):
        raise ValueError(f"backbone checkpoint {path!r} holds a {type(state).__name__}, not a state dict")
    if state.get("format") == BACKBONE_FORMAT:
        if state["arch"] != name:
            raise ValueError(f"backbone checkpoint {path!r} is a {state['arch']}, but the config asks for {name} "
                             f"(model.backbone)")
    if state.get("format") == DETECTOR_FORMAT:  # a detector trained by dwdet: its ResNet
        arch = (state.get("config") or {}).get("model", {}).get("backbone")
        if arch != name:
            raise ValueError(f"checkpoint {path!r} is a detector on a {arch}, but the config asks for {name} "
                             f"(model.backbone)")
        state = {k[len(DETECTOR_BACKBONE):]: v for k, v in state["model"].items() if k.startswith(DETECTOR_BACKBONE)}
    state = state.get("state_dict", state.get("model", state))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # stored half precision
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a parameter of another shape
        raise ValueError(f"backbone checkpoint {path!r} does not fit {name}: {error}") from error
    missing = [k for k in missing if not k.startswith("fc.")]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"backbone checkpoint {path!r} does not match {type(model).__name__}: "
                         f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
