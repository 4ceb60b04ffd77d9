"""Mapping MMDetection 2.x checkpoints of the DW authors' detector (strongwolf/DW: ``FCOS`` with a
``ResNet``/``ResNeXt`` backbone, ``FPN`` neck and ``DWHead``) onto :class:`FCOSDetector`'s state dict.

The key map (``{i}`` an index, ``{p}`` a parameter or buffer name; docs/mmdet_checkpoints.md lists it
with the shapes):

=========================================  ==================================================
MMDetection                                dwdet
=========================================  ==================================================
``backbone.{name}``                        ``backbone.body.{name}`` (same ResNet names)
``neck.lateral_convs.{i}.conv.{p}``        ``backbone.fpn.inner_blocks.{i}.0.{p}`` (i = 0..2: C3..C5)
``neck.fpn_convs.{i}.conv.{p}``, i < 3     ``backbone.fpn.layer_blocks.{i}.0.{p}`` (P3..P5)
``neck.fpn_convs.3.conv.{p}``              ``backbone.fpn.extra_blocks.p6.{p}``
``neck.fpn_convs.4.conv.{p}``              ``backbone.fpn.extra_blocks.p7.{p}``
``bbox_head.cls_convs.{k}.conv.{p}``       ``head.cls_tower.{3k}.{p}``
``bbox_head.cls_convs.{k}.gn.{p}``         ``head.cls_tower.{3k+1}.{p}``
``bbox_head.reg_convs.{k}.conv|gn.{p}``    ``head.reg_tower.{3k}|{3k+1}.{p}``
``bbox_head.conv_cls.{p}``                 ``head.cls_logits.{p}``
``bbox_head.conv_reg.{p}``                 ``head.bbox_pred.{p}``
``bbox_head.conv_centerness.{p}``          ``head.objectness.{p}``
``bbox_head.reg_offset.{p}``               ``head.reg_offsets.{p}`` (box refinement)
``bbox_head.scales.{i}.scale``             ``head.scales[i]`` (one scalar per level)
=========================================  ==================================================

Dropped: every ``num_batches_tracked`` (frozen BatchNorm has none), and
``bbox_head.center_prior.mean`` / ``.sigma``, constants of the loss (checked: mean 0 and one sigma
for every class, which is returned). What the model cannot hold, such as the deformable
convolutions of the DCN variant (``conv_offset`` keys), is an error naming every such key.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["ConversionError", "convert_mmdet_state_dict", "mmdet_key_to_dwdet"]


class ConversionError(ValueError):
    """The checkpoint does not map onto the model; the message names every key at fault."""


_RULES: list[tuple[re.Pattern, str]] = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"backbone\.(.+)", r"backbone.body.\1"),
    (r"neck\.lateral_convs\.([0-2])\.conv\.(weight|bias)", r"backbone.fpn.inner_blocks.\1.0.\2"),
    (r"neck\.fpn_convs\.([0-2])\.conv\.(weight|bias)", r"backbone.fpn.layer_blocks.\1.0.\2"),
    (r"neck\.fpn_convs\.3\.conv\.(weight|bias)", r"backbone.fpn.extra_blocks.p6.\1"),
    (r"neck\.fpn_convs\.4\.conv\.(weight|bias)", r"backbone.fpn.extra_blocks.p7.\1"),
    (r"bbox_head\.conv_cls\.(weight|bias)", r"head.cls_logits.\1"),
    (r"bbox_head\.conv_reg\.(weight|bias)", r"head.bbox_pred.\1"),
    (r"bbox_head\.conv_centerness\.(weight|bias)", r"head.objectness.\1"),
    (r"bbox_head\.reg_offset\.(weight|bias)", r"head.reg_offsets.\1"),
]]
_TOWER = re.compile(r"bbox_head\.(cls|reg)_convs\.(\d+)\.(conv|gn)\.(weight|bias)")
_SCALE = re.compile(r"bbox_head\.scales\.(\d+)\.scale")
_PRIOR = ("bbox_head.center_prior.mean", "bbox_head.center_prior.sigma")


def mmdet_key_to_dwdet(key: str) -> str | None:
    """Our name for an MMDetection key, ``None`` for one without a counterpart (the scales, which
    are stacked, and the dropped keys are handled by :func:`convert_mmdet_state_dict`)."""
    tower = _TOWER.fullmatch(key)
    if tower:
        branch, index, kind, param = tower.groups()
        return f"head.{branch}_tower.{3 * int(index) + (kind == 'gn')}.{param}"
    for pattern, replacement in _RULES:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


def convert_mmdet_state_dict(mmdet_state: Mapping[str, Tensor], target: Mapping[str, Tensor]
                             ) -> tuple[dict[str, Tensor], float | None]:
    """``mmdet_state`` renamed to the keys of ``target`` (our model's state dict, for the names and
    shapes), and the center prior's sigma (``None`` if the checkpoint has no center prior).

    Every key of ``target`` must be filled and every key of ``mmdet_state`` used (or dropped by the
    rules above) with the same shape; otherwise :class:`ConversionError` lists all the keys at
    fault: unmapped, missing, and shape mismatches."""
    converted: dict[str, Tensor] = {}
    unmapped, mismatched, scales = [], [], {}
    mismatched_names = set()
    for key, value in mmdet_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key in _PRIOR:
            continue
        scale = _SCALE.fullmatch(key)
        if scale:
            scales[int(scale.group(1))] = value
            continue
        name = mmdet_key_to_dwdet(key)
        if name is None or name not in target:
            unmapped.append(key if name is None else f"{key} (-> {name}, which the model does not have)")
            continue
        if tuple(value.shape) != tuple(target[name].shape):
            mismatched.append(f"{key} {tuple(value.shape)} -> {name} {tuple(target[name].shape)}")
            mismatched_names.add(name)
            continue
        converted[name] = value.detach().to(target[name].dtype).clone()
    if scales and "head.scales" in target:
        expected = target["head.scales"].shape[0]
        if sorted(scales) != list(range(expected)):
            mismatched.append(f"bbox_head.scales.{{i}}.scale for levels {sorted(scales)} -> head.scales "
                              f"({expected} levels)")
            mismatched_names.add("head.scales")
        else:
            converted["head.scales"] = torch.stack([scales[i].reshape(()) for i in range(expected)]).to(
                target["head.scales"].dtype)
    missing = [key for key in target if key not in converted and key not in mismatched_names]
    if unmapped or missing or mismatched:
        raise ConversionError(_report(unmapped, missing, mismatched))
    return converted, _prior_sigma(mmdet_state)


def _prior_sigma(state: Mapping[str, Tensor]) -> float | None:
    if _PRIOR[1] not in state:
        return None
    mean, sigma = state.get(_PRIOR[0]), state[_PRIOR[1]]
    if mean is not None and bool(mean.abs().max() > 0):
        raise ConversionError(f"{_PRIOR[0]} is not zero: a learnt center-prior offset, which dwdet's DW loss "
                              f"does not have")
    if not torch.allclose(sigma, sigma.flatten()[0].expand_as(sigma)):
        raise ConversionError(f"{_PRIOR[1]} differs between classes: dwdet's DW loss has one sigma")
    return float(sigma.flatten()[0])


def _report(unmapped: list[str], missing: list[str], mismatched: list[str]) -> str:
    lines = ["the MMDetection checkpoint does not fit this model:"]
    for title, keys in (("keys of the checkpoint with no place in the model", unmapped),
                        ("keys of the model that the checkpoint does not fill", missing),
                        ("shapes that differ (checkpoint -> model)", mismatched)):
        if keys:
            lines.append(f"{len(keys)} {title}:")
            lines += [f"  {key}" for key in keys]
    hints = []
    if any("conv_offset" in key for key in unmapped):
        hints.append("conv_offset keys are deformable convolutions (the DCN variant): dwdet's ResNet and head "
                     "have none, so that checkpoint cannot be converted")
    if any(key.startswith("bbox_head.reg_offset") for key in unmapped):
        hints.append("bbox_head.reg_offset is box refinement: use a *_refine_* config or model.refine=True")
    if any(key.startswith("head.reg_offsets") for key in missing):
        hints.append("the model refines boxes but the checkpoint does not: use a config without refinement "
                     "or model.refine=False")
    if any(key.startswith("backbone.") for key in unmapped + missing + mismatched):
        hints.append("backbone keys that differ mean another depth or width: pick the config of the "
                     "checkpoint's backbone (model.backbone=resnet50 | resnet101 | resnext101_64x4d)")
    lines += [f"hint: {hint}" for hint in hints]
    return "\n".join(lines)
