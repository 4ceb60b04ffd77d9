"""Backbone pretraining on the synthetic benchmark's own objects, the stand-in for ImageNet weights
where nothing can be downloaded: a ResNet learns to classify crops of single objects (and crops of
background) drawn like the benchmark's images, with BatchNorm, then its weights (classifier
dropped) go into a backbone file that ``model.backbone_weights`` reads, with FrozenBatchNorm2d in
the detector, as ImageNet weights are used.

Every crop comes from its own ``numpy`` Generator seeded by (seed, split, index), and the training
crops of a step are rendered in the training process, so a run is reproducible for a given torch
build and thread count.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dwdet.models.backbone import BACKBONE_FORMAT, build_resnet
from dwdet.models.transform import IMAGENET_MEAN, IMAGENET_STD
from lab.synthetic import SyntheticConfig, num_classes, render_crop

CROP_SPLITS = {"train": 2, "val": 3}  # stream ids beside the detection images' splits 0 and 1
BACKBONE_FILE_VERSION = 1


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines a pretraining run."""

    arch: str = "resnet10"
    data: dict = field(default_factory=lambda: {"colours": 10})  # SyntheticConfig fields of the look
    crop_size: int = 40
    steps: int = 800
    batch_size: int = 64
    lr: float = 0.1  # peak, after a linear warmup over 3 % of the steps; cosine to zero after
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    val_crops: int = 2000
    seed: int = 0


def render_crops(look: SyntheticConfig, size: int, seed: int, split: str, start: int, count: int):
    """Crops ``start .. start + count - 1`` of ``split`` as a normalised (count, 3, size, size)
    batch and their classes (count,)."""
    images, labels = [], []
    for index in range(start, start + count):
        pixels, label = render_crop(np.random.default_rng([seed, CROP_SPLITS[split], index]), look, size)
        images.append(torch.from_numpy(pixels))
        labels.append(label)
    batch = torch.stack(images).permute(0, 3, 1, 2).float().div_(255)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std, torch.tensor(labels)


def learning_rate(config: PretrainConfig, step: int) -> float:
    warmup = max(1, round(0.03 * config.steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, config.steps - warmup)))


@torch.no_grad()
def accuracy(model: nn.Module, look: SyntheticConfig, config: PretrainConfig, count: int | None = None,
             chunk: int = 250) -> float:
    """Top-1 accuracy on the first ``count`` (default: all) validation crops."""
    count = config.val_crops if count is None else min(count, config.val_crops)
    model.eval()
    correct = 0
    for start in range(0, count, chunk):
        images, labels = render_crops(look, config.crop_size, config.seed, "val", start, min(chunk, count - start))
        correct += int((model(images).argmax(1) == labels).sum())
    model.train()
    return correct / max(1, count)


def pretrain_backbone(out: str | os.PathLike, config: PretrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train ``config.arch`` on the crops and write the backbone file ``out``; returns its metadata."""
    look = SyntheticConfig(**config.data)
    classes = num_classes(look) + 1  # + background
    torch.manual_seed(config.seed)
    model = build_resnet(config.arch, None, norm="bn")
    model.fc = nn.Linear(model.fc.in_features, classes)
    weights = [p for p in model.parameters() if p.ndim > 1]  # no decay on norms and biases
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": config.weight_decay},
                                 {"params": others, "weight_decay": 0.0}],
                                lr=config.lr, momentum=0.9, nesterov=True)
    started = time.perf_counter()
    model.train()
    for step in range(config.steps):
        images, labels = render_crops(look, config.crop_size, config.seed, "train", step * config.batch_size,
                                      config.batch_size)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        loss = F.cross_entropy(model(images), labels, label_smoothing=config.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}; lower the lr ({config.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.steps - 1:
            log(f"step {step + 1}/{config.steps}  loss {loss.item():.3f}  lr {learning_rate(config, step):.4f}  "
                f"{time.perf_counter() - started:.0f} s")
        if (step + 1) % max(1, config.steps // 4) == 0 and step + 1 < config.steps:  # the learning curve
            count = min(500, config.val_crops)
            log(f"step {step + 1}: accuracy {100 * accuracy(model, look, config, count):.1f} % on {count} val crops")
    val_accuracy = accuracy(model, look, config)
    minutes = (time.perf_counter() - started) / 60
    log(f"validation accuracy {100 * val_accuracy:.1f} % on {config.val_crops} crops "
        f"({classes} classes incl. background), {minutes:.1f} min")
    meta = {"config": asdict(config), "num_classes": classes, "val_accuracy": val_accuracy,
            "minutes": round(minutes, 2), "torch": str(torch.__version__), "threads": torch.get_num_threads()}
    save_backbone(out, config.arch, model, meta)
    return meta


def save_backbone(out: str | os.PathLike, arch: str, model: nn.Module, meta: dict) -> None:
    """Write the backbone file atomically: conv weights in half precision (half the size; the
    detector trains from exactly these values), BatchNorm statistics in float32, no classifier."""
    state = {k: (v.half() if v.ndim == 4 else v) for k, v in model.state_dict().items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    temporary = f"{out}.tmp-{os.getpid()}"
    torch.save({"format": BACKBONE_FORMAT, "version": BACKBONE_FILE_VERSION, "arch": arch, "state_dict": state,
                "pretrain": meta}, temporary)
    os.replace(temporary, out)
