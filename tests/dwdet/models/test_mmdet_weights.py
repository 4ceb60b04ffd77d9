"""Converting the DW authors' MMDetection 2.x checkpoints: state dicts written in MMDetection's
naming (ResNet / ResNeXt backbone, FPN neck, DWHead, as strongwolf/DW's configs build them) load
into our detector with every value where it belongs (the converted model computes what the
original did), and what does not fit is an error naming every key."""
import json
from pathlib import Path
import re

import pytest
import torch

from dwdet.data.coco import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from dwdet.engine import load_checkpoint
from dwdet.models import build_fcos
from dwdet.models.mmdet_weights import ConversionError, convert_mmdet_state_dict
from tests.tool_loader import ROOT, load_tool

CONFIG = str(Path(ROOT) / "configs" / "dw_r50_fpn_1x_coco.py")

torch.set_num_threads(1)


def mmdet_names(ours: dict) -> dict:
    """Our state dict as MMDetection would name it: the layout of mmdet's ResNet (torchvision's
    names), FPN (lateral_convs / fpn_convs ConvModules, the two extra convs last), and DWHead
    (cls_convs / reg_convs ConvModules of conv + gn, conv_cls, conv_reg, conv_centerness, reg_offset,
    one Scale per level, and the CenterPrior's constant mean and sigma), with BatchNorm's counter."""
    mm = {}
    fpn = {"inner_blocks": "lateral_convs", "layer_blocks": "fpn_convs"}
    head = {"cls_logits": "conv_cls", "bbox_pred": "conv_reg", "objectness": "conv_centerness",
            "reg_offsets": "reg_offset"}
    for key, value in ours.items():
        if key.startswith("backbone.body."):
            name = "backbone." + key[len("backbone.body."):]
            mm[name] = value
            if name.endswith("running_var"):
                mm[name.replace("running_var", "num_batches_tracked")] = torch.tensor(1000)
        elif m := re.fullmatch(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d)\.0\.(\w+)", key):
            mm[f"neck.{fpn[m[1]]}.{m[2]}.conv.{m[3]}"] = value
        elif m := re.fullmatch(r"backbone\.fpn\.extra_blocks\.p([67])\.(\w+)", key):
            mm[f"neck.fpn_convs.{int(m[1]) - 3}.conv.{m[2]}"] = value
        elif m := re.fullmatch(r"head\.(cls|reg)_tower\.(\d+)\.(\w+)", key):
            index = int(m[2])
            mm[f"bbox_head.{m[1]}_convs.{index // 3}.{'conv' if index % 3 == 0 else 'gn'}.{m[3]}"] = value
        elif key == "head.scales":
            mm.update({f"bbox_head.scales.{i}.scale": s.clone() for i, s in enumerate(value)})
        elif m := re.fullmatch(r"head\.(\w+)\.(weight|bias)", key):
            mm[f"bbox_head.{head[m[1]]}.{m[2]}"] = value
        else:
            raise AssertionError(f"the test does not know {key}")
    classes = ours["head.cls_logits.weight"].shape[0]
    mm["bbox_head.center_prior.mean"] = torch.zeros(classes, 2)
    mm["bbox_head.center_prior.sigma"] = torch.full((classes, 2), 1.11)
    return mm


def randomised(model):
    """Every parameter and buffer drawn at random, so that a misplaced tensor changes the output."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(noise + 0.5 if "running_var" in name or name.endswith("scales") else noise * 0.1 - 0.05)
    return model.eval()


@pytest.mark.parametrize("refine", [False, True])
def test_a_converted_r50_computes_what_the_original_did(refine):
    original = randomised(build_fcos(80, backbone="resnet50", backbone_weights=None, refine=refine, min_size=128,
                                     max_size=128, score_thresh=0.0))
    mm = mmdet_names(original.state_dict())
    assert "bbox_head.cls_convs.3.gn.weight" in mm and "neck.fpn_convs.4.conv.weight" in mm
    assert ("bbox_head.reg_offset.weight" in mm) == refine
    converted = build_fcos(80, backbone="resnet50", backbone_weights=None, refine=refine, min_size=128,
                           max_size=128, score_thresh=0.0).eval()
    weights, sigma = convert_mmdet_state_dict(mm, converted.state_dict())
    converted.load_state_dict(weights)  # strict
    assert sigma == pytest.approx(1.11)
    assert torch.equal(weights["head.cls_tower.7.weight"], mm["bbox_head.cls_convs.2.gn.weight"])
    assert torch.equal(weights["head.scales"], torch.stack([mm[f"bbox_head.scales.{i}.scale"] for i in range(5)]))
    image = [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        expected, got = original(image)[0], converted(image)[0]
    assert len(expected["scores"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(expected[key], got[key]), key


@pytest.mark.parametrize("backbone", ["resnet101", "resnext101_64x4d"])
def test_r101_and_x101_checkpoints_fill_every_key(backbone):
    model = build_fcos(80, backbone=backbone, backbone_weights=None, refine=True)
    mm = mmdet_names(model.state_dict())
    assert "backbone.layer3.22.conv2.weight" in mm  # 23 blocks in stage 3
    weights, _ = convert_mmdet_state_dict(mm, model.state_dict())
    assert weights.keys() == model.state_dict().keys()


def test_what_does_not_fit_is_named_key_by_key():
    model = build_fcos(80, backbone="resnet50", backbone_weights=None, refine=False)
    mm = mmdet_names(build_fcos(80, backbone="resnet50", backbone_weights=None, refine=True).state_dict())
    # the DCN variant: modulated deformable convs in stages 2-4 and on the head's last convs
    mm["backbone.layer2.0.conv2.conv_offset.weight"] = torch.zeros(27, 128, 3, 3)
    mm["bbox_head.cls_convs.3.conv.conv_offset.bias"] = torch.zeros(27)
    del mm["bbox_head.conv_centerness.bias"]
    mm["bbox_head.conv_reg.weight"] = torch.zeros(4, 128, 3, 3)
    with pytest.raises(ConversionError) as error:
        convert_mmdet_state_dict(mm, model.state_dict())
    message = str(error.value)
    for key in ("backbone.layer2.0.conv2.conv_offset.weight", "bbox_head.cls_convs.3.conv.conv_offset.bias",
                "bbox_head.reg_offset.weight", "bbox_head.reg_offset.bias", "head.objectness.bias",
                "bbox_head.conv_reg.weight (4, 128, 3, 3) -> head.bbox_pred.weight (4, 256, 3, 3)"):
        assert key in message, key
    assert "4 keys of the checkpoint with no place in the model" in message
    assert "1 keys of the model that the checkpoint does not fill" in message
    assert "hint: conv_offset keys are deformable convolutions" in message
    assert "hint: bbox_head.reg_offset is box refinement" in message


def test_the_command_converts_a_checkpoint_that_infer_then_uses(tmp_path):
    """A small model (ResNet-18 names are ResNet's too) saved as MMDetection saves it, converted with
    one of our configs, then used by tools/infer.py with COCO's class names."""
    overrides = ["model.backbone=resnet18", "model.channels=64", "model.min_size=[128]", "model.max_size=128",
                 "model.score_thresh=0.0"]
    original = randomised(build_fcos(80, backbone="resnet18", backbone_weights=None, channels=64, min_size=128,
                                     max_size=128, score_thresh=0.0))
    torch.save({"meta": {"CLASSES": COCO_CLASS_NAMES, "mmdet_version": "2.25.0",
                         "config": "img_norm_cfg = dict(\n    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, "
                                   "57.375], to_rgb=True)\n"},
                "state_dict": mmdet_names(original.state_dict())}, tmp_path / "mm.pth")
    out = tmp_path / "converted" / "dw.pth"
    tool = load_tool("convert_mmdet_checkpoint")
    assert tool.main([str(tmp_path / "mm.pth"), "--config", CONFIG,
                      "--out", str(out), "--opts", *overrides]) == 0
    ckpt = load_checkpoint(out)
    assert [c["id"] for c in ckpt["categories"]] == list(COCO_CATEGORY_IDS)
    assert ckpt["categories"][0]["name"] == "person" and ckpt["config"]["model"]["num_classes"] == 80

    image = tmp_path / "image.png"
    pixels = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    from torchvision.transforms.functional import to_pil_image
    to_pil_image(pixels).save(image)
    assert load_tool("infer").main([str(out), str(image), "--out-dir", str(tmp_path / "infer"), "--device",
                                    "cpu", "--score-thr", "0"]) == 0
    results = json.loads((tmp_path / "infer" / "results.json").read_text())
    with torch.no_grad():
        expected = original([pixels.float() / 255])[0]
    assert [r["category_id"] for r in results] == [COCO_CATEGORY_IDS[k] for k in expected["labels"].tolist()]
    assert [r["category_name"] for r in results][:3] == [COCO_CLASS_NAMES[k] for k in expected["labels"][:3].tolist()]

    # another normalisation, or classes that are not COCO's without their annotation file, are refused
    torch.save({"meta": {"CLASSES": ("a",) * 80}, "state_dict": mmdet_names(original.state_dict())}, tmp_path / "x.pth")
    with pytest.raises(ConversionError, match="not COCO's.*--categories"):
        tool.main([str(tmp_path / "x.pth"), "--config", CONFIG,
                   "--out", str(tmp_path / "x_out.pth"), "--opts", *overrides])
