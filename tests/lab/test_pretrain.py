"""Backbone pretraining (lab.pretrain, lab/pretrain_backbone.py) and the backbone files it
writes, as the detector reads them."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import lab.pretrain_backbone as pretrain_backbone_tool
from dwdet.models.backbone import build_backbone, build_resnet
from lab.pretrain import PretrainConfig, learning_rate, pretrain_backbone, render_crops
from lab.synthetic import SyntheticConfig, class_names, render_crop

TINY = PretrainConfig(arch="resnet10", data={"colours": 2}, crop_size=32, steps=3, batch_size=6, val_crops=8)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrain") / "r10.pth"
    meta = pretrain_backbone(path, TINY, log=lambda line: None)
    return path, meta


def test_crops_hold_one_object_of_their_class_or_none():
    look = SyntheticConfig(colours=10)
    labels = set()
    for index in range(300):
        pixels, label = render_crop(np.random.default_rng([0, 2, index]), look, 48)
        assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8
        labels.add(label)
    assert labels <= set(range(81)) and 80 in labels and len(labels) > 60  # background is class 80
    again = render_crop(np.random.default_rng([0, 2, 299]), look, 48)
    assert np.array_equal(again[0], pixels) and again[1] == label


def test_crop_batches_are_normalised_and_reproducible():
    look = SyntheticConfig(colours=2)
    images, labels = render_crops(look, 32, seed=0, split="train", start=5, count=4)
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    assert images.min() < -1 and images.max() > 1  # ImageNet-normalised, not [0, 1]
    same, _ = render_crops(look, 32, seed=0, split="train", start=5, count=4)
    other, _ = render_crops(look, 32, seed=0, split="val", start=5, count=4)
    assert torch.equal(images, same) and not torch.equal(images, other)


def test_the_log_gives_the_learning_curve_on_held_out_crops(tmp_path):
    lines = []
    pretrain_backbone(tmp_path / "r10.pth", replace(TINY, steps=8), log=lines.append)
    curve = [line for line in lines if ": accuracy " in line]
    assert [line.split(":")[0] for line in curve] == ["step 2", "step 4", "step 6"]  # each quarter but the last
    assert all(line.endswith("% on 8 val crops") for line in curve)
    assert lines[-1].startswith("validation accuracy") and "on 8 crops" in lines[-1]


def test_learning_rate_warms_up_then_decays_to_zero():
    config = PretrainConfig(steps=100, lr=0.2)
    rates = [learning_rate(config, step) for step in range(100)]
    assert rates[0] == pytest.approx(0.2 / 3) and max(rates) == pytest.approx(0.2)
    assert rates[-1] < 1e-3 and all(a >= b for a, b in zip(rates[3:], rates[4:]))


def test_backbone_file_loads_into_the_detector_backbone(backbone_file):
    path, meta = backbone_file
    saved = torch.load(path, weights_only=True)
    assert saved["format"] == "dwdet-backbone" and saved["arch"] == "resnet10"
    assert not any(k.startswith("fc.") for k in saved["state_dict"])
    assert saved["state_dict"]["layer4.0.conv2.weight"].dtype == torch.float16
    assert meta["num_classes"] == len(class_names(2)) + 1 and 0 <= meta["val_accuracy"] <= 1
    resnet = build_resnet("resnet10", path)  # frozen BatchNorm, as the detector uses it
    for key, value in saved["state_dict"].items():
        assert torch.equal(resnet.state_dict()[key], value.float()), key
    assert not resnet.layer1[0].conv1.weight.requires_grad and resnet.layer2[0].conv1.weight.requires_grad
    fpn = build_backbone("resnet10", path, out_channels=32)
    maps = fpn(torch.zeros(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps.values()] == [8, 4, 2, 1, 1]


def test_pretraining_is_reproducible(tmp_path, backbone_file):
    # The shipped weights are documented by their command: the same run gives the same weights
    # (how well they classify is a benchmark: docs/studies/shapes80.md).
    again = pretrain_backbone(tmp_path / "again.pth", TINY, log=lambda line: None)
    first = torch.load(backbone_file[0], weights_only=True)["state_dict"]
    second = torch.load(tmp_path / "again.pth", weights_only=True)["state_dict"]
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert again["val_accuracy"] == backbone_file[1]["val_accuracy"]
    pretrain_backbone(tmp_path / "other.pth", replace(TINY, seed=1), log=lambda line: None)
    assert not torch.equal(torch.load(tmp_path / "other.pth", weights_only=True)["state_dict"]["conv1.weight"],
                           first["conv1.weight"])


@pytest.mark.parametrize("case", ["missing", "corrupt", "other_arch", "not_a_dict", "other_depth"])
def test_bad_backbone_files_are_named(tmp_path, backbone_file, case):
    path = tmp_path / "bad.pth"
    name = "resnet10"
    if case == "missing":
        message = "does not exist"
    elif case == "corrupt":
        path.write_bytes(Path(backbone_file[0]).read_bytes()[:1000])
        message = "cannot be read"
    elif case == "other_arch":
        path = backbone_file[0]
        name, message = "resnet18", "is a resnet10, but the config asks for resnet18"
    elif case == "not_a_dict":
        torch.save([1, 2], path)
        message = "holds a list, not a state dict"
    else:  # a plain state dict of a shallower ResNet: keys missing
        torch.save(build_resnet("resnet18").state_dict(), path)
        name, message = "resnet34", "does not match"
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        build_resnet(name, path)
    assert str(path) in str(error.value)


def test_resnet10_has_no_torchvision_weights():
    with pytest.raises(ValueError, match="resnet10 has no torchvision weights"):
        build_resnet("resnet10", "IMAGENET1K_V1")


def test_command_line_tool(tmp_path, capsys):
    out = tmp_path / "sub" / "r10.pth"
    pretrain_backbone_tool.main(["--out", str(out), "--colours", "2", "--crop-size", "32", "--steps", "2", "--batch-size", "4",
                      "--val-crops", "4"])
    printed = capsys.readouterr().out
    assert out.is_file() and "validation accuracy" in printed and "sha256" in printed
    with pytest.raises(SystemExit):
        pretrain_backbone_tool.main(["--out", str(out), "--steps", "0"])
