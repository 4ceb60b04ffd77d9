"""A linear probe of a backbone on a detection dataset's objects: how well the frozen features at
each object's centre tell its class, the part of detection a pretrained backbone is for.

Crop accuracy of the pretraining task does not say this (a backbone that classifies crops better
can make worse detectors); the probe measures it on the detector's own images, at the detector's
resolution, through the frozen BatchNorm the detector uses, in a minute instead of a training run.

For every annotated object the C3, C4 and C5 features at its box centre (bilinear) are
concatenated; a linear classifier is fitted on the training split's objects (standardised
features, L2-regularised multinomial logistic regression, full-batch L-BFGS) and scored on the
validation split's. Besides top-1 it reports top-1 by COCO size range and, for shape x hue classes,
how often the shape and the hue alone are right.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dwdet.models.backbone import build_resnet
from dwdet.models.transform import IMAGENET_MEAN, IMAGENET_STD, fit_size

SIZE_RANGES = {"small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, float("inf"))}


def load_objects(images_dir: str | Path, ann_file: str | Path, max_images: int | None = None):
    """(image path, boxes (N, 4) xywh, labels (N,) 0-based by category order, areas) per image."""
    coco = json.loads(Path(ann_file).read_text())
    category_index = {c["id"]: k for k, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    by_image: dict[int, list] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for image in sorted(coco["images"], key=lambda i: i["id"])[:max_images]:
        anns = by_image.get(image["id"], [])
        if anns:
            records.append((Path(images_dir) / image["file_name"],
                            torch.tensor([a["bbox"] for a in anns], dtype=torch.float32),
                            torch.tensor([category_index[a["category_id"]] for a in anns]),
                            torch.tensor([float(a["area"]) for a in anns])))
    return records


@torch.no_grad()
def centre_features(backbone: nn.Module, records, short_side: int, max_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenated C3/C4/C5 features at every object's box centre on the images resized as the
    detector resizes them, with the labels and the annotated areas."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    features, labels, areas = [], [], []
    backbone.eval()
    for path, boxes, classes, area in records:
        image = Image.open(path).convert("RGB")
        height, width = fit_size((image.height, image.width), short_side, max_size)
        scale = width / image.width
        if (height, width) != (image.height, image.width):
            image = image.resize((width, height), Image.BILINEAR)
        x = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255) - mean) / std
        height, width = x.shape[1:]
        x = F.pad(x, (0, -width % 32, 0, -height % 32))[None]  # the detector pads to 32 as well
        padded_height, padded_width = x.shape[2:]
        x = backbone.layer1(backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
        centres = (boxes[:, :2] + boxes[:, 2:] / 2) * scale  # pixels of the resized image
        # grid_sample's [-1, 1] spans the map's outer pixel edges, which are the padded image's
        grid = (centres / torch.tensor([padded_width, padded_height]) * 2 - 1).view(1, -1, 1, 2)
        per_level = []
        for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
            x = layer(x)
            per_level.append(F.grid_sample(x, grid, align_corners=False)[0, :, :, 0].t())  # (N, C)
        features.append(torch.cat(per_level, dim=1))
        labels.append(classes)
        areas.append(area)
    return torch.cat(features), torch.cat(labels), torch.cat(areas)


def fit_linear(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
               iterations: int = 300) -> nn.Linear:
    """Multinomial logistic regression on standardised ``features`` (the standardisation folded into
    the returned layer)."""
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mean) / std
    classifier = nn.Linear(z.shape[1], num_classes)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), lr=1, max_iter=iterations, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(z), labels) + weight_decay * classifier.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():  # fold (x - mean) / std into the layer
        classifier.bias -= classifier.weight @ (mean / std)
        classifier.weight /= std
    return classifier


def probe_backbone(arch: str, weights, train: list, val: list, num_classes: int, short_side: int,
                   max_size: int, colours: int = 0, weight_decay: float = 1e-3) -> dict:
    """Fit the probe on ``train`` records' objects and score it on ``val``'s (see the module doc)."""
    backbone = build_resnet(arch, weights, norm="frozen_bn")
    train_x, train_y, _ = centre_features(backbone, train, short_side, max_size)
    val_x, val_y, val_area = centre_features(backbone, val, short_side, max_size)
    torch.manual_seed(0)
    classifier = fit_linear(train_x, train_y, num_classes, weight_decay)
    with torch.no_grad():
        predicted = classifier(val_x).argmax(1)
        train_top1 = float((classifier(train_x).argmax(1) == train_y).float().mean())
    right = predicted == val_y
    result = {"objects": {"train": len(train_y), "val": len(val_y)}, "top1": float(right.float().mean()),
              "train_top1": train_top1}
    for name, (low, high) in SIZE_RANGES.items():
        inside = (val_area >= low) & (val_area < high)
        result[f"top1_{name}"] = float(right[inside].float().mean()) if inside.any() else float("nan")
    if colours:  # labels are shape-major: label = shape * colours + hue
        result["shape_right"] = float((predicted // colours == val_y // colours).float().mean())
        result["hue_right"] = float((predicted % colours == val_y % colours).float().mean())
    return result
