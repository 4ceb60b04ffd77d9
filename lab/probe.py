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

import torch
import torch.nn.functional as F
from torch import nn

from dwdet.models.backbone import build_resnet
from dwdet.models.transform import DetectionTransform

SIZE_RANGES = {"small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, float("inf"))}


@torch.no_grad()
def centre_features(backbone: nn.Module, dataset, transform: DetectionTransform
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenated C3/C4/C5 features at every object's box centre, with the labels and the box
    areas in the dataset's pixels (COCO's size ranges), for ``dataset``'s ``(image, target)``
    items resized, normalised and padded by the detector's ``transform``."""
    features, labels, areas = [], [], []
    backbone.eval()
    transform.eval()
    for image, target in dataset:
        boxes = target["boxes"]
        if len(boxes) == 0:
            continue
        batch, (resized,) = transform([image], [{"boxes": boxes.clone()}])
        x = batch.tensors
        centres = (resized["boxes"][:, :2] + resized["boxes"][:, 2:]) / 2
        # grid_sample's [-1, 1] spans the map's outer pixel edges, which are the padded image's
        grid = (centres / torch.tensor([x.shape[3], x.shape[2]]) * 2 - 1).view(1, -1, 1, 2)
        x = backbone.layer1(backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
        per_level = []
        for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
            x = layer(x)
            per_level.append(F.grid_sample(x, grid, align_corners=False)[0, :, :, 0].t())  # (N, C)
        features.append(torch.cat(per_level, dim=1))
        labels.append(target["labels"])
        areas.append((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
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


def probe_backbone(arch: str, weights, train, val, num_classes: int, transform: DetectionTransform,
                   colours: int = 0, weight_decay: float = 1e-3) -> dict:
    """Fit the probe on the ``train`` dataset's objects and score it on ``val``'s (see the module doc)."""
    backbone = build_resnet(arch, weights, norm="frozen_bn")
    train_x, train_y, _ = centre_features(backbone, train, transform)
    val_x, val_y, val_area = centre_features(backbone, val, transform)
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
    if colours:  # labels are kind-major: label = kind (shape or pattern) * colours + hue
        result["kind_right"] = float((predicted // colours == val_y // colours).float().mean())
        result["hue_right"] = float((predicted % colours == val_y % colours).float().mean())
    return result
