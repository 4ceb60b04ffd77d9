"""EfficientNet-Lite0 as a backbone: parity with the reference implementation
(efficientnet-lite-pytorch, Apache-2.0, pinned in requirements.txt) key by key, TensorFlow's
padding, the stages that frozen_stages freezes, the norms, and the detector on it."""
import efficientnet_lite_pytorch as reference
import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from dwdet.losses import DWLoss
from dwdet.models import build_backbone, build_efficientnet, build_fcos, build_torchvision_fcos
from dwdet.models.efficientnet import (BN_EPS, INPUT_MEAN, INPUT_STD, EfficientNetLite, lite0_block_names,
                                       rename_reference_key, rename_reference_state, tf_same_padding)
from dwdet.models.backbone import norm_layer
from dwdet.models.transform import IMAGENET_MEAN, IMAGENET_STD

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def random_reference(seed: int = 0):
    """The reference EfficientNet-Lite0 (dynamic "SAME" padding: any input size) with random
    weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = reference.EfficientNet.from_name("efficientnet-lite0", image_size=None)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(("running_mean", "bias")):
                tensor.normal_(0, 0.1)
            elif name.endswith("weight") and tensor.dim() == 1:  # BatchNorm scale
                tensor.uniform_(0.5, 1.5)
    return model.eval()


def reference_features(model, x):
    """The reference's outputs at strides 8, 16, 32: after its blocks 4, 10 and 15 (40, 112, 320 channels)."""
    x = model._swish(model._bn0(model._conv_stem(x)))
    features = []
    for i, block in enumerate(model._blocks):
        x = block(x)
        if i in (4, 10, 15):
            features.append(x)
    return features


@pytest.mark.parametrize("size", [(96, 128), (97, 130)])  # the detector's padded sizes, and odd ones
def test_features_match_the_reference_key_by_key(size):
    ref = random_reference()
    state, dropped = rename_reference_state(ref.state_dict())
    assert sorted(dropped) == sorted(k for k in ref.state_dict() if k.startswith(("_conv_head.", "_bn1.", "_fc.")))
    fpn = build_backbone("efficientnet_lite0", weights=None, out_channels=32).eval()
    fpn.body.load_state_dict(state, strict=True)  # the body: the stem and layer1-layer4, no classifier
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference_features(ref, x)
        found = list(fpn.body(x).values())
    assert [f.shape[1] for f in found] == [40, 112, 320]
    for level, (a, b) in enumerate(zip(found, expected)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()), msg=f"C{level + 3}")


def test_the_padding_is_tensorflows():
    x = torch.randn(1, 1, 8, 7)
    # stride 2, an output of ceil(size / 2): on the even side (8 high) the odd pixel of padding goes to
    # the bottom, on the odd side (7 wide) both sides get the same; F.pad lists (left, right, top, bottom)
    assert torch.equal(tf_same_padding(x, 3, 2), torch.nn.functional.pad(x, (1, 1, 0, 1)))
    assert torch.equal(tf_same_padding(x, 5, 2), torch.nn.functional.pad(x, (2, 2, 1, 2)))
    assert torch.equal(tf_same_padding(x, 3, 1), torch.nn.functional.pad(x, (1, 1, 1, 1)))


def test_the_reference_names_map_one_to_one():
    names = lite0_block_names()
    assert names[:3] == ["layer1.0", "layer1.1", "layer1.2"] and names[-1] == "layer4.4" and len(names) == 16
    assert rename_reference_key("_blocks.3._bn1.running_var") == "layer2.0.depthwise.norm.running_var"
    assert rename_reference_key("_bn0.weight") == "stem.norm.weight"
    assert rename_reference_key("_fc.bias") is None
    for bad in ("_blocks.16._bn1.weight", "_blocks.0._se_reduce.weight", "layer1.0.expand.conv.weight"):
        with pytest.raises(ValueError, match="not a weight of EfficientNet-Lite0"):
            rename_reference_key(bad)
    ours = EfficientNetLite(norm_layer("bn", BN_EPS)).state_dict()
    state, _ = rename_reference_state(random_reference().state_dict())
    assert sorted(state) == sorted(ours)


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2, 4])
def test_frozen_stages_freeze_the_stem_and_the_blocks_up_to_a_stride(frozen_stages):
    body = build_efficientnet("efficientnet_lite0", frozen_stages=frozen_stages)
    frozen = STAGES[:frozen_stages + 1]
    for name, parameter in body.named_parameters():
        assert parameter.requires_grad != name.startswith(frozen), name
    for norm in ("gn", "bn"):  # the trainable norms train everything
        assert all(p.requires_grad for p in build_efficientnet(frozen_stages=frozen_stages, norm=norm).parameters())


def test_the_norms_keep_the_weights_epsilon():
    frozen = [m for m in build_efficientnet().modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 1 + 3 * 16 - 1 and all(m.eps == BN_EPS for m in frozen)  # block 0 has no expansion
    assert all(m.eps == BN_EPS for m in build_efficientnet(norm="bn").modules() if isinstance(m, torch.nn.BatchNorm2d))
    groups = {m.num_channels: m.num_groups for m in build_efficientnet(norm="gn").modules()
              if isinstance(m, torch.nn.GroupNorm)}
    assert groups[16] == 16 and groups[24] == 8 and groups[40] == 8 and groups[96] == 32 and groups[1152] == 32


def test_frozen_batchnorm_stays_frozen_in_training():
    fpn = build_backbone("efficientnet_lite0", weights=None, out_channels=16)
    buffers = {k: v.clone() for k, v in fpn.body.named_buffers()}
    fpn.train()
    sum(level.sum() for level in fpn(torch.randn(2, 3, 64, 64)).values()).backward()
    assert fpn.body.stem.conv.weight.grad is None and fpn.body.layer1[0].depthwise.conv.weight.grad is None
    assert fpn.body.layer2[0].expand.conv.weight.grad is not None
    for name, buffer in fpn.body.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], rtol=0, atol=0)


def test_the_fpn_gives_p3_to_p7_with_the_released_init():
    fpn = build_backbone("efficientnet_lite0", weights=None, out_channels=24).eval()
    with torch.no_grad():
        levels = fpn(torch.randn(1, 3, 256, 192))
    assert list(levels) == ["0", "1", "2", "p6", "p7"]
    assert [tuple(v.shape[-2:]) for v in levels.values()] == [(32, 24), (16, 12), (8, 6), (4, 3), (2, 2)]
    assert all(v.shape[1] == 24 for v in levels.values())
    assert [m.in_channels for m in fpn.fpn.inner_blocks.modules() if isinstance(m, torch.nn.Conv2d)] == [40, 112, 320]
    assert all(m.bias.abs().sum() == 0 for m in fpn.fpn.modules() if isinstance(m, torch.nn.Conv2d))


def test_weight_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="efficientnet_lite0 has no torchvision weights.*tools/fetch_backbone.py"):
        build_efficientnet(weights="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_efficientnet(weights=tmp_path / "missing.pth")
    state = EfficientNetLite(norm_layer("bn", BN_EPS)).state_dict()
    del state["layer4.4.project.norm.bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing keys \['layer4.4.project.norm.bias'\]"):
        build_efficientnet(weights=tmp_path / "partial.pth")


def test_the_detector_trains_on_it_with_its_input_normalisation():
    torch.manual_seed(0)
    model = build_fcos(2, DWLoss(2), backbone="efficientnet_lite0", backbone_weights=None, channels=32,
                       min_size=96, max_size=128)
    assert model.transform.image_mean == list(INPUT_MEAN) and model.transform.image_std == list(INPUT_STD)
    tv_fcos = build_torchvision_fcos(2, backbone="efficientnet_lite0", backbone_weights=None, channels=32)
    assert tv_fcos.transform.image_std == list(INPUT_STD)
    resnet = build_fcos(2, backbone="resnet10", backbone_weights=None, channels=32)  # the ResNets keep ImageNet's
    assert resnet.transform.image_mean == list(IMAGENET_MEAN) and resnet.transform.image_std == list(IMAGENET_STD)
    images = [torch.rand(3, 90, 120), torch.rand(3, 100, 80)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.body.layer4[-1].project.conv.weight.grad.abs().sum() > 0
    assert model.backbone.body.stem.conv.weight.grad is None
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4
