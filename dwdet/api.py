"""Detect objects from Python with a checkpoint alone.

    from dwdet import Detector
    detector = Detector.from_checkpoint("weights/dw_r10_shapes16_demo.pth")
    found = detector.predict("street.jpg", score_thr=0.3)      # or a list of images
    for box, name, score in zip(found.boxes.tolist(), found.class_names, found.scores.tolist()):
        print(name, round(score, 2), box)

An image is a file path, a PIL image, a numpy array (H, W, 3) uint8 RGB, or a tensor (3, H, W):
float in [0, 1] or uint8. ``dwdet-infer`` is this API plus the files it writes.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

__all__ = ["Detections", "Detector", "ImageInput", "ImageReadError", "read_image"]

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]


class ImageReadError(OSError):
    """An image file that does not exist or cannot be decoded; the message names the file."""


@dataclass
class Detections:
    """The objects found in one image, best first."""

    boxes: Tensor  # (D, 4) float32 x1, y1, x2, y2 in the input image's pixels
    scores: Tensor  # (D,) float32 in [0, 1]
    labels: Tensor  # (D,) int64 class ids 0, 1, ... (the checkpoint's label order)
    class_names: list[str]  # the name of each detection's class

    def __len__(self) -> int:
        return len(self.scores)

    def as_dict(self) -> dict[str, Tensor]:
        """``{"boxes", "scores", "labels"}``: the detector's own output format (for drawing, COCO results)."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}


def read_image(path: str | os.PathLike) -> Tensor:
    """The (3, H, W) uint8 RGB pixels of an image file; :class:`ImageReadError` naming the file if it
    cannot be read (missing, truncated, not an image)."""
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # what PIL raises on bad files
        raise ImageReadError(f"cannot read the image {os.fspath(path)}: {err}") from err


def as_float_image(image: ImageInput, index: int = 0) -> Tensor:
    """Any accepted image as the model's input: a (3, H, W) float tensor in [0, 1], RGB."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image).float() / 255
    if isinstance(image, Image.Image):
        return pil_to_tensor(image.convert("RGB")).float() / 255
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"images[{index}]: a numpy image must be (H, W, 3) uint8 RGB, got {image.shape} "
                             f"{image.dtype}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"images[{index}]: a tensor image must be (3, H, W), got {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.float() / 255
        if not image.is_floating_point():
            raise ValueError(f"images[{index}]: a tensor image must be float in [0, 1] or uint8, got {image.dtype}")
        low, high = torch.aminmax(image)
        if low < 0 or high > 1:
            raise ValueError(f"images[{index}]: a float tensor image must lie in [0, 1], got values in "
                             f"[{low.item():g}, {high.item():g}] (divide 0-255 pixels by 255)")
        return image.float()
    raise TypeError(f"images[{index}]: expected a file path, PIL image, numpy (H, W, 3) uint8 array or (3, H, W) "
                    f"tensor, got {type(image).__name__}")


class Detector:
    """A trained detector with its class names, ready to predict.

    Args:
        model: a dwdet detector in eval mode (``model(list of (3, H, W) in [0, 1])``).
        categories: ``{"id", "name"}`` of each label, in label order.
        device: where to run (default: the first GPU if there is one, else the CPU).
        batch_size: at most this many images per forward pass; only images of the same size share
            one, so that an image's detections do not depend on the others it came with.
        config: the model's resolved config (kept for reference: ``detector.config``).
    """

    def __init__(self, model: torch.nn.Module, categories: Sequence[dict[str, Any]],
                 device: str | torch.device | None = None, batch_size: int = 8, config: Any = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().to(self.device)
        self.categories = list(categories)
        self.class_names = [c["name"] for c in self.categories]
        self.batch_size = batch_size
        self.config = config

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, device: str | torch.device | None = None,
                        batch_size: int = 8, config: Mapping[str, Any] | None = None,
                        categories: Sequence[dict[str, Any]] | None = None) -> Detector:
        """The detector of a checkpoint written by dwdet-train, dwdet-export or dwdet-convert-mmdet.

        ``config`` changes its config as :meth:`dwdet.config.Config.merge` does (e.g.
        ``{"model": {"test_min_size": 600}}``); ``categories`` names the classes of a checkpoint from
        before dwdet 0.2, which does not carry them."""
        from dwdet.engine.builders import load_detector
        model, cfg, categories = load_detector(checkpoint, categories=categories, changes=config)
        return cls(model, categories, device, batch_size, cfg)

    @torch.inference_mode()
    def predict(self, images: ImageInput | Sequence[ImageInput], score_thr: float = 0.0
                ) -> Detections | list[Detections]:
        """The detections scoring at least ``score_thr`` in one image, or in each of a list of images.

        The model keeps at most ``model.detections_per_img`` per image, all above
        ``model.score_thresh`` (0.05 unless the config says otherwise); lower that with
        ``overrides`` for a lower ``score_thr`` to matter."""
        single = not isinstance(images, (list, tuple))
        inputs = [as_float_image(image, i) for i, image in enumerate([images] if single else images)]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(inputs):
            by_size.setdefault(tuple(image.shape[1:]), []).append(i)
        found: list[Detections | None] = [None] * len(inputs)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                outputs = self.model([inputs[i].to(self.device) for i in chunk])
                for i, output in zip(chunk, outputs):
                    found[i] = self._detections(output, score_thr)
        return found[0] if single else found

    def _detections(self, output: dict[str, Tensor], score_thr: float) -> Detections:
        keep = output["scores"] >= score_thr
        labels = output["labels"][keep].cpu()
        return Detections(output["boxes"][keep].float().cpu(), output["scores"][keep].float().cpu(), labels,
                          [self.class_names[label] for label in labels.tolist()])
