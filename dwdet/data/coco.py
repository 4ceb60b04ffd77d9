"""COCO-format detection datasets read through pycocotools.

Policy for imperfect data (every case is either an error that names the culprit or a counted skip):

=============================================  ==============================================
annotation file missing / not JSON / lacking   ``FileNotFoundError`` / ``ValueError`` naming the
a required key or field                        file and the entry at fault
annotation with an unknown ``category_id``     ``ValueError`` naming the annotation id, or with
                                               ``on_unknown_category="skip"`` dropped and counted
crowd annotation (``iscrowd=1``)               ignored and counted
box partly outside the image                   clipped to the image
box with non-positive size after clipping      dropped and counted
image without valid boxes                      left out when ``filter_empty`` (training), kept
                                               otherwise (evaluation)
image file missing (checked at construction)   ``FileNotFoundError`` naming the file and image id,
                                               or with ``on_bad_image="skip"`` left out, counted,
                                               and one warning
image file unreadable or of another size than  ``RuntimeError`` naming the file and image id, or
the annotation says (found when loaded)        with ``on_bad_image="skip"`` a warning and the next
                                               image of the dataset is returned in its place
=============================================  ==============================================

The counts are in :attr:`CocoDetection.stats`; the trainer logs them (``DatasetStats.describe``). Substituting the next image is
meant for training; evaluation datasets should keep the default ``on_bad_image="error"``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]

# The 80 categories of COCO 2017 detection in id order (what models trained on COCO predict as labels 0..79).
COCO_CATEGORY_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                     *range(72, 83), *range(84, 91))
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")

_REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
_POLICIES = ("error", "skip")


@dataclass
class DatasetStats:
    """What was left out of a :class:`CocoDetection` and why (for logging)."""

    images_in_file: int = 0
    images_kept: int = 0
    empty_images: int = 0  # images without a valid box (left out when filter_empty)
    bad_images: int = 0  # image files found missing at construction (skip policy)
    crowd_boxes: int = 0
    clipped_boxes: int = 0  # partly outside the image, clipped to it
    degenerate_boxes: int = 0  # non-positive width or height after clipping
    unknown_category_boxes: int = 0  # skip policy

    def describe(self) -> str:
        """One line for the log: what was kept, and what was left out or changed and why."""
        counts = [(self.bad_images, "image files missing"), (self.empty_images, "images without a usable box"),
                  (self.degenerate_boxes, "boxes of zero or negative size (after clipping to the image)"),
                  (self.crowd_boxes, "crowd boxes"), (self.unknown_category_boxes, "boxes of unknown categories"),
                  (self.clipped_boxes, "boxes clipped to the image")]
        notes = "; ".join(f"{n} {what}" for n, what in counts if n)
        return f"{self.images_kept} of {self.images_in_file} images" + (f"; {notes}" if notes else "")


def load_coco(ann_file: str) -> COCO:
    """Read a COCO detection annotation file into a pycocotools ``COCO`` after checking its structure.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON or lacks a key or field that detection needs (the message
            names the file and the entry).
    """
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file {ann_file} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"annotation file {ann_file} is not valid JSON: {e}") from None
    _check_structure(data, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _check_structure(data: object, ann_file: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"annotation file {ann_file}: expected a JSON object at the top level, "
                         f"got {type(data).__name__}")
    for key, fields in _REQUIRED.items():
        if key not in data:
            raise ValueError(f"annotation file {ann_file}: missing key '{key}' (a COCO detection file "
                             f"needs 'images', 'annotations' and 'categories')")
        if not isinstance(data[key], list):
            raise ValueError(f"annotation file {ann_file}: '{key}' must be a list, "
                             f"got {type(data[key]).__name__}")
        seen = set()
        for position, entry in enumerate(data[key]):
            where = f"annotation file {ann_file}: {key}[{position}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} is not an object")
            missing = [field for field in fields if field not in entry]
            if missing:
                raise ValueError(f"{where} (id {entry.get('id')}) lacks {', '.join(map(repr, missing))}")
            if entry["id"] in seen:
                raise ValueError(f"{where}: duplicate id {entry['id']}")
            seen.add(entry["id"])
    image_ids = {image["id"] for image in data["images"]}
    for image in data["images"]:
        if not all(isinstance(image[k], int) and image[k] > 0 for k in ("width", "height")):
            raise ValueError(f"annotation file {ann_file}: image {image['id']} has width/height "
                             f"{image['width']}/{image['height']}; positive integers expected")
    for ann in data["annotations"]:
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            raise ValueError(f"annotation file {ann_file}: annotation {ann['id']} has bbox {bbox!r}; "
                             f"expected [x, y, width, height] with 4 finite numbers")
        if ann["image_id"] not in image_ids:
            raise ValueError(f"annotation file {ann_file}: annotation {ann['id']} refers to image "
                             f"{ann['image_id']}, which is not in 'images'")


class CocoDetection(Dataset):
    """A COCO-format detection dataset.

    Items follow docs/architecture.md: ``(image, target)`` with ``image`` a float tensor (3, H, W) in
    [0, 1] (RGB) and ``target = {"boxes": (G, 4) float32 xyxy pixels, "labels": (G,) int64,
    "image_id": int}``. Labels are the category ids, sorted, renumbered 0..C-1.

    Args:
        image_root: folder that the images' ``file_name`` are relative to.
        ann_file: COCO annotation JSON.
        transforms: ``(image, target) -> (image, target)``, e.g. a random flip for training.
        filter_empty: leave out images without a valid box (training); keep them for evaluation.
        on_bad_image: ``"error"`` or ``"skip"`` (see the module docstring).
        on_unknown_category: ``"error"`` or ``"skip"`` for annotations whose category is not listed.
    """

    def __init__(self, image_root: str, ann_file: str, transforms: Optional[Transform] = None, *,
                 filter_empty: bool = True, on_bad_image: str = "error",
                 on_unknown_category: str = "error") -> None:
        for name, value in (("on_bad_image", on_bad_image), ("on_unknown_category", on_unknown_category)):
            if value not in _POLICIES:
                raise ValueError(f"{name} must be one of {_POLICIES}, got {value!r}")
        self.image_root = image_root
        self.ann_file = ann_file
        self.transforms = transforms
        self.on_bad_image = on_bad_image
        self.coco = load_coco(ann_file)

        self.cat_ids: list[int] = sorted(self.coco.cats)
        self.cat_id_to_label = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in self.cat_ids]

        self.stats = DatasetStats(images_in_file=len(self.coco.imgs))
        ids = self._existing_images(sorted(self.coco.imgs))
        self._targets = {image_id: self._parse(image_id, on_unknown_category) for image_id in ids}
        empty = [i for i in ids if len(self._targets[i]["labels"]) == 0]
        self.stats.empty_images = len(empty)
        if filter_empty:
            ids = [i for i in ids if len(self._targets[i]["labels"]) > 0]
        self.ids: list[int] = ids
        self.stats.images_kept = len(ids)

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    @property
    def categories(self) -> list[dict]:
        """``{"id", "name"}`` of each class in label order (what checkpoints carry)."""
        return [{"id": cat_id, "name": name} for cat_id, name in zip(self.cat_ids, self.class_names)]

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every image, in dataset order, from the annotation file."""
        return [(self.coco.imgs[i]["height"], self.coco.imgs[i]["width"]) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        position = range(len(self.ids))[index]  # IndexError when out of range
        for offset in range(len(self.ids)):
            image_id = self.ids[(position + offset) % len(self.ids)]
            try:
                image = self._read_image(image_id)
                break
            except RuntimeError as e:
                if self.on_bad_image == "error":
                    raise
                warnings.warn(f"{e}; using the next image instead", RuntimeWarning, stacklevel=2)
        else:
            raise RuntimeError(f"none of the {len(self.ids)} images of {self.ann_file} could be read")
        target = {k: v.clone() for k, v in self._targets[image_id].items()}
        target["image_id"] = image_id
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _path(self, image_id: int) -> str:
        return os.path.join(self.image_root, self.coco.imgs[image_id]["file_name"])

    def _existing_images(self, ids: list[int]) -> list[int]:
        missing = [i for i in ids if not os.path.isfile(self._path(i))]
        if not missing:
            return ids
        first = f"{self._path(missing[0])} (image id {missing[0]})"
        if self.on_bad_image == "error":
            raise FileNotFoundError(f"{len(missing)} image file(s) listed in {self.ann_file} do not exist, "
                                    f"e.g. {first}; pass on_bad_image='skip' to leave them out")
        warnings.warn(f"leaving out {len(missing)} image(s) of {self.ann_file} whose file does not exist, "
                      f"e.g. {first}", RuntimeWarning, stacklevel=3)
        self.stats.bad_images = len(missing)
        missing = set(missing)
        return [i for i in ids if i not in missing]

    def _parse(self, image_id: int, on_unknown_category: str) -> dict[str, torch.Tensor]:
        """Boxes (xyxy, clipped) and labels of one image, counting what is left out."""
        info = self.coco.imgs[image_id]
        boxes, labels = [], []
        for ann in self.coco.imgToAnns[image_id]:
            if ann["category_id"] not in self.cat_id_to_label:
                if on_unknown_category == "error":
                    raise ValueError(f"annotation {ann['id']} (image {image_id}) of {self.ann_file} has "
                                     f"category_id {ann['category_id']}, which is not among its categories "
                                     f"{self.cat_ids}; pass on_unknown_category='skip' to drop such annotations")
                self.stats.unknown_category_boxes += 1
                continue
            if ann.get("iscrowd", 0):
                self.stats.crowd_boxes += 1
                continue
            x, y, w, h = ann["bbox"]
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_id_to_label[ann["category_id"]])
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        unclipped = boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, info["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, info["height"])
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self.stats.degenerate_boxes += int((~valid).sum())
        self.stats.clipped_boxes += int(((boxes != unclipped).any(axis=1) & valid).sum())
        return {"boxes": torch.from_numpy(boxes[valid]),
                "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1)[torch.from_numpy(valid)]}

    def _read_image(self, image_id: int) -> torch.Tensor:
        path = self._path(image_id)
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as e:
            raise RuntimeError(f"cannot read image {path} (image id {image_id}): {e}") from e
        info = self.coco.imgs[image_id]
        if image.size != (info["width"], info["height"]):
            raise RuntimeError(f"image {path} (image id {image_id}) is {image.width}x{image.height} pixels "
                               f"but {self.ann_file} says {info['width']}x{info['height']}")
        return pil_to_tensor(image).to(torch.float32, memory_format=torch.contiguous_format).div_(255)
