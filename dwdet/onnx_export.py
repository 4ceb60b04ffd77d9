"""The detector as an ONNX graph, for runtimes without PyTorch (onnxruntime, TensorRT, ...).

The graph takes one image of any size and returns what ``model([image])[0]`` returns,
post-processing included:

    input   image   (3, H, W) float32, RGB in [0, 1]
    outputs boxes   (D, 4) float32, x1 y1 x2 y2 in the input image's pixels
            scores  (D,) float32, best first
            labels  (D,) int64, 0-based class ids

Resizing to the model's input size, normalisation and padding happen inside the graph, as do
score decoding, the per-level top-k, class-aware NMS (ONNX ``NonMaxSuppression``) and the
``detections_per_img`` cut. Box refinement samples through ``GridSample`` (the head's
``portable`` mode), since no runtime knows the ``dw_ops`` custom op. The class names travel in
the model's metadata (``categories``, JSON).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dwdet.models.detector import FCOSDetector

__all__ = ["OUTPUT_NAMES", "export_onnx", "require_onnx_packages", "run_onnx"]

OUTPUT_NAMES = ("boxes", "scores", "labels")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the exporter, torch's translator to ONNX, the runtime


def require_onnx_packages() -> None:
    """An ImportError that names what to install, before minutes of export fail at their end."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'dwdet[onnx]' (or the versions "
                          f"pinned in requirements.txt)")


class SingleImageDetector(nn.Module):
    """``model`` for one (3, H, W) image, returning (boxes, scores, labels) instead of a list of dicts."""

    def __init__(self, model: FCOSDetector) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        detections = self.model([image])[0]
        return tuple(detections[name] for name in OUTPUT_NAMES)


def export_onnx(model: nn.Module, path: str | os.PathLike, categories: Sequence[dict[str, Any]] = ()) -> str:
    """Write ``model`` (a dwdet FCOS detector) as an ONNX graph for (3, H, W) images of any size;
    returns the path written."""
    if not isinstance(model, FCOSDetector):
        raise TypeError(f"only dwdet's FCOS detector (model.type='fcos') exports to ONNX, got {type(model).__name__}")
    require_onnx_packages()
    model = copy.deepcopy(model).cpu().eval()
    model.head.portable = True
    # an example with two different sides, neither 0, 1 nor a size the model resizes to, so that
    # the export keeps height and width as two free symbols
    example = torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(0))
    sizes = {1: torch.export.Dim("height", min=2, max=16384), 2: torch.export.Dim("width", min=2, max=16384)}
    with torch.no_grad(), warnings.catch_warnings():
        # torchvision's fake NMS kernel uses a torch API that warns of its own deprecation
        warnings.filterwarnings("ignore", message=".*create_unbacked_symint", category=FutureWarning)
        # torch.onnx's own capture of the module, not a torch.export.export program handed over: that
        # one is faster to make but bakes in the branches of the resize rule that the example takes
        # (its orientation), which torch.onnx's capture keeps general (tests/dwdet/test_onnx.py checks both)
        program = torch.onnx.export(SingleImageDetector(model).eval(), (example,), dynamo=True,
                                    dynamic_shapes=(sizes,), input_names=["image"], output_names=list(OUTPUT_NAMES),
                                    verbose=False)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program.save(path)
    _set_metadata(path, {"categories": json.dumps(list(categories)),
                         "input": "image (3, H, W) float32 RGB in [0, 1], any H and W"})
    return path


def _set_metadata(path: str, props: dict[str, str]) -> None:
    import onnx
    graph = onnx.load(path)
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, path)


def run_onnx(path: str | os.PathLike, image: Tensor) -> dict[str, Tensor]:
    """The detections of one (3, H, W) float image in [0, 1] by the exported graph at ``path``
    (onnxruntime, CPU), as ``{"boxes", "scores", "labels"}`` tensors."""
    import onnxruntime
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {"image": image.detach().cpu().float().numpy()})
    return {name: torch.from_numpy(value) for name, value in zip(OUTPUT_NAMES, outputs)}
