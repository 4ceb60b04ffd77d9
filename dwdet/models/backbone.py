"""ResNet / ResNeXt or EfficientNet-Lite0 backbone with an FPN giving P3-P7.

The backbone follows the released DW model: torchvision ResNets with every BatchNorm replaced by
FrozenBatchNorm2d and the stem and stage 1 frozen; the FPN has P3-P5 from C3-C5 and P6/P7 from
P5's output, with a ReLU before P7's conv. EfficientNet-Lite0 (``dwdet.models.efficientnet``) has
the same stages by output stride, and its ImageNet weights a file of ``tools/fetch_backbone.py``.
"""
import math
import os
from typing import Dict, Optional, Tuple, Union

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet, WeightsEnum
from torchvision.models.resnet import BasicBlock
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from dwdet.models import efficientnet
from dwdet.models.transform import IMAGENET_MEAN, IMAGENET_STD

RESNETS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnext101_64x4d")
EFFICIENTNETS = ("efficientnet_lite0",)
BACKBONES = RESNETS + EFFICIENTNETS
# Backbones torchvision has no builder (and no weights) for: one BasicBlock per stage, half of
# ResNet-18's depth and twice its speed, for CPU-sized benchmarks.
CUSTOM_RESNETS = {"resnet10": (BasicBlock, [1, 1, 1, 1])}
BACKBONE_FORMAT = "dwdet-backbone"  # the "format" entry of lab/pretrain_backbone.py's and tools/fetch_backbone.py's files
DETECTOR_FORMAT = "dwdet-checkpoint"  # that of a detector checkpoint (dwdet.engine.checkpoint)
DETECTOR_BACKBONE = "backbone.body."  # the prefix of the backbone's weights in a detector's state dict
# the stem and stages 1-4 (outputs at strides 4, 8, 16, 32; EfficientNet's stem at 2), the units of frozen_stages
STAGE_MODULES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
EFFICIENTNET_STAGE_MODULES = (("stem",), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
Weights = Union[None, str, os.PathLike, WeightsEnum]
NORMS = ("frozen_bn", "gn", "bn")


def norm_layer(norm: str, eps: float = 1e-5):
    """``channels -> module`` of a backbone norm: BatchNorm (frozen or trainable) with ``eps``, or
    GroupNorm with 32 groups (fewer where the channels are not a multiple of 32: the largest power
    of two dividing them, as EfficientNet's 16-, 24- and 40-channel layers need)."""
    if norm == "frozen_bn":
        return lambda channels: FrozenBatchNorm2d(channels, eps=eps)
    if norm == "bn":
        return lambda channels: nn.BatchNorm2d(channels, eps=eps)
    return lambda channels: nn.GroupNorm(math.gcd(32, channels), channels)


def input_normalisation(name: str) -> Dict[str, Tuple[float, ...]]:
    """``image_mean`` and ``image_std`` (of RGB values in [0, 1]) that backbone ``name``'s pretrained
    weights expect, which the detector built on it normalises its inputs with: ImageNet's for the
    ResNets (their torchvision weights, and the lab's pretraining), TensorFlow's for EfficientNet-Lite."""
    if name in EFFICIENTNETS:
        return {"image_mean": efficientnet.INPUT_MEAN, "image_std": efficientnet.INPUT_STD}
    return {"image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}


def _check_arguments(name: str, norm: str, frozen_stages: int) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    if norm not in NORMS:
        raise ValueError(f"unknown backbone norm {norm!r}; choose one of {NORMS}")
    if not (isinstance(frozen_stages, int) and -1 <= frozen_stages <= 4):
        raise ValueError(f"frozen_stages must be an integer in [-1, 4] (-1: none, 4: all), got {frozen_stages!r}")


def _freeze(model: nn.Module, stages, norm: str, frozen_stages: int) -> None:
    """No gradient for the first ``frozen_stages + 1`` of ``stages`` (lists of child names), with frozen BatchNorm."""
    if norm == "frozen_bn":
        for stage in stages[:frozen_stages + 1]:
            for module_name in stage:
                getattr(model, module_name).requires_grad_(False)


def build_resnet(name: str, weights: Weights = None, norm: str = "frozen_bn", frozen_stages: int = 1) -> ResNet:
    """A torchvision ResNet/ResNeXt with frozen BatchNorm and a frozen stem and stage 1.

    Args:
        name: one of :data:`RESNETS`.
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
    _check_arguments(name, norm, frozen_stages)
    if name not in RESNETS:
        raise ValueError(f"{name} is not a ResNet; build it with build_efficientnet")
    path = _checkpoint_path(weights)
    if name in CUSTOM_RESNETS:
        if weights is not None and path is None:
            raise ValueError(f"{name} has no torchvision weights ({weights!r}); use None or the path of a "
                             "backbone file (lab/pretrain_backbone.py writes one)")
        model = ResNet(*CUSTOM_RESNETS[name], norm_layer=norm_layer(norm))
    else:
        model = torchvision.models.get_model(name, weights=None if path else _verify_weights(name, weights),
                                             norm_layer=norm_layer(norm))
    if path is not None:
        _load_checkpoint(model, path, name)
    _freeze(model, STAGE_MODULES, norm, frozen_stages)
    return model


def build_efficientnet(name: str = "efficientnet_lite0", weights: Weights = None, norm: str = "frozen_bn",
                       frozen_stages: int = 1) -> efficientnet.EfficientNetLite:
    """EfficientNet-Lite0 (see :mod:`dwdet.models.efficientnet`) with the arguments of :func:`build_resnet`.

    Args:
        name: ``"efficientnet_lite0"``.
        weights: None for random init, or the path of a backbone file: its ImageNet weights as
            ``tools/fetch_backbone.py efficientnet_lite0`` writes them, a detector checkpoint of
            dwdet on this backbone, or its bare state dict; every key must match.
        norm: ``"frozen_bn"``, ``"gn"`` or ``"bn"`` as for the ResNets (BatchNorm with eps 1e-3,
            the weights' own; GroupNorm with 32 groups, fewer on the 16-, 24- and 40-channel layers).
        frozen_stages: with ``"frozen_bn"``, the stem and stages 1 .. ``frozen_stages`` get no
            gradient, the stages being the blocks by output stride as for the ResNets: -1 none, 0 the
            stem (stride 2), 1 also ``layer1`` (the blocks up to stride 4: everything before C3, as
            the released ResNet model freezes), 2, 3, 4 also the stride 8, 16, 32 blocks (4: all).
    """
    _check_arguments(name, norm, frozen_stages)
    if name not in EFFICIENTNETS:
        raise ValueError(f"{name} is not an EfficientNet; build it with build_resnet")
    path = _checkpoint_path(weights)
    if weights is not None and path is None:
        raise ValueError(f"{name} has no torchvision weights ({weights!r}); use None or the path of a backbone file "
                         f"(`python tools/fetch_backbone.py {name}` writes its ImageNet weights)")
    model = efficientnet.EfficientNetLite(norm_layer(norm, eps=efficientnet.BN_EPS))
    if path is not None:
        _load_checkpoint(model, path, name)
    _freeze(model, EFFICIENTNET_STAGE_MODULES, norm, frozen_stages)
    return model


def build_backbone(name: str = "resnet50", weights: Weights = None, out_channels: int = 256,
                   norm: str = "frozen_bn", frozen_stages: int = 1) -> BackboneWithFPN:
    """ResNet or EfficientNet + FPN returning five maps (P3-P7, strides 8-128) of ``out_channels``
    channels, from the outputs of the stride-8, 16 and 32 stages (``layer2``-``layer4``).

    The output is an ordered dict (keys ``"0", "1", "2", "p6", "p7"``); see :func:`build_resnet`
    and :func:`build_efficientnet` for ``name``, ``weights``, ``norm`` and ``frozen_stages``."""
    if name in EFFICIENTNETS:
        body = build_efficientnet(name, weights, norm, frozen_stages)
        in_channels = list(body.out_channels[1:])
    else:
        body = build_resnet(name, weights, norm, frozen_stages)
        in_channels = [body.inplanes // 4, body.inplanes // 2, body.inplanes]  # inplanes: C5's channels
    fpn = BackboneWithFPN(body, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
                          in_channels_list=in_channels,
                          out_channels=out_channels,
                          # in == out channels makes P6 come from P5 (use_P5), not from C5
                          extra_blocks=LastLevelP6P7(out_channels, out_channels))
    for module in fpn.fpn.modules():  # the released model's FPN init (xavier uniform, zero bias)
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return fpn


def _checkpoint_path(weights: Weights) -> Optional[str]:
    """``weights`` as the path of a file that exists, None if they are not a path."""
    is_path = isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (os.sep in weights or weights.endswith((".pth", ".pt"))))
    if not is_path:
        return None
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone checkpoint {path!r} does not exist")
    return path


def _verify_weights(name: str, weights: Union[None, str, WeightsEnum]) -> Optional[WeightsEnum]:
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum.verify(weights)
    except (KeyError, TypeError) as error:
        choices = [w.name for w in enum] + ["DEFAULT"]
        raise ValueError(f"weights {weights!r} are not weights of {name}; use None, one of {choices} "
                         "or the path of a local checkpoint (.pth)") from error


def _load_checkpoint(model: nn.Module, path: str, name: str) -> None:
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
