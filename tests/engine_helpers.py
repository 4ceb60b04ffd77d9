"""Stand-ins for the engine tests: a tiny detector and dataset that honour the contracts of
docs/architecture.md, a sharded batch sampler, and builders that plug them into the Trainer."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from torch import nn
from torch.utils.data import Dataset

from dwdet.config import Config, load_config
from dwdet.engine.evaluation import CocoEvaluator
from dwdet.utils.dist import get_rank, get_world_size, reduce_mean

torch.set_num_threads(1)  # tiny tensors: extra threads only contend on a shared CI machine

CATEGORY_IDS = [3, 7]  # COCO ids of labels 0 and 1: deliberately not 1-based contiguous

CONFIG_TEXT = """
model = dict(num_classes=2, dropout=0.2)
data = dict(num_train=8, num_val=5, flip=True, sigterm_at=None, nan_at=None)
train = dict(epochs=2, batch_size=2, lr=0.16, optimizer="sgd", sgd_momentum=0.9, adamw_betas=(0.9, 0.999),
             weight_decay=1e-4, warmup_iters=3,
             warmup_ratio=0.1, lr_steps=(1,), lr_gamma=0.1, clip_grad_norm=0.0, loss_weights={}, ema=False, ema_decay=0.9, ema_tau=2.0,
             amp="none", nonfinite="stop", seed=0, init_from=None,
             deterministic=False, num_workers=0, log_interval=2, checkpoint_interval=1, keep_checkpoints=0,
             checkpoint_iters=0,
             tensorboard=False)
eval = dict(interval=1, batch_size=2, num_workers=0)
"""


def tiny_config(folder: str | os.PathLike, overrides: list[str] = ()) -> Config:
    path = Path(folder) / "tiny_config.py"
    path.write_text(CONFIG_TEXT)
    return load_config(path, overrides)


class TinyDetector(nn.Module):
    """Predicts one box and class per image from pooled conv features. Has a GroupNorm, a scalar
    ``scale`` and dropout (so that the RNG state matters), and normalises its loss by the number of
    images with boxes averaged over ranks, like the real losses."""

    def __init__(self, num_classes: int = 2, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.drop = nn.Dropout(dropout)
        self.box = nn.Linear(8, 4)
        self.cls = nn.Linear(8, num_classes)
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        feats = torch.cat([F.relu(self.norm(self.conv(im[None]))).mean((2, 3)) for im in images])
        feats = self.drop(feats)
        cxcywh = torch.sigmoid(self.box(feats) * self.scale)
        rel = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], dim=1)
        sizes = torch.tensor([[im.shape[2], im.shape[1]] * 2 for im in images], dtype=rel.dtype, device=rel.device)
        logits = self.cls(feats)
        if self.training:
            has_box = [i for i, t in enumerate(targets) if len(t["boxes"])]
            count = len(images) + sum(len(t["boxes"]) for t in targets)  # never 0, so needs no clamp
            normaliser = reduce_mean(torch.tensor(float(count), device=rel.device))
            gt_rel = torch.stack([targets[i]["boxes"][0] for i in has_box]) / sizes[has_box] if has_box \
                else rel.new_zeros(0, 4)
            gt_label = torch.stack([targets[i]["labels"][0] for i in has_box]) if has_box \
                else torch.zeros(0, dtype=torch.long, device=rel.device)
            return {"loss_box": F.l1_loss(rel[has_box], gt_rel, reduction="sum") / normaliser,
                    "loss_cls": F.cross_entropy(logits[has_box], gt_label, reduction="sum") / normaliser,
                    # every image contributes, as background points do in a dense detector
                    "loss_neg": 0.1 * logits.sigmoid().pow(2).sum() / normaliser}
        scores, labels = logits.softmax(1).max(1)
        boxes = rel * sizes
        return [{"boxes": boxes[i:i + 1], "labels": labels[i:i + 1], "scores": scores[i:i + 1]}
                for i in range(len(images))]


class TinyDataset(Dataset):
    """Random images (2 heights) with 0-2 boxes; training flips with the global torch RNG.

    ``sigterm_at`` / ``nan_at``: on that call of ``__getitem__`` (1-based), send SIGTERM to this
    process / return an all-NaN image.
    """

    categories = [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]  # label order, as CocoDetection has them

    def __init__(self, n: int, flip: bool, sigterm_at: int | None = None, nan_at: int | None = None):
        self.n, self.flip, self.sigterm_at, self.nan_at = n, flip, sigterm_at, nan_at
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def target(self, index: int) -> dict:
        g = torch.Generator().manual_seed(1000 + index)
        height, width = (12, 16) if index % 2 else (16, 16)
        count = index % 3
        xy = torch.rand(count, 2, generator=g) * torch.tensor([width / 2, height / 2])
        wh = 2 + torch.rand(count, 2, generator=g) * torch.tensor([width / 2 - 2, height / 2 - 2])
        return {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 2, (count,), generator=g),
                "image_id": 100 + index, "size": (height, width)}

    def __getitem__(self, index: int):
        self.calls += 1
        if self.calls == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        target = self.target(index)
        height, width = target.pop("size")
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(index))
        if self.calls == self.nan_at:
            image = torch.full_like(image, float("nan"))
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
            target["boxes"] = torch.stack([width - target["boxes"][:, 2], target["boxes"][:, 1],
                                           width - target["boxes"][:, 0], target["boxes"][:, 3]], 1)
        return image, target

    def coco(self) -> COCO:
        """The unflipped ground truth as a pycocotools COCO object."""
        images, annotations = [], []
        for index in range(self.n):
            target = self.target(index)
            height, width = target["size"]
            images.append({"id": target["image_id"], "height": height, "width": width})
            for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({"id": len(annotations) + 1, "image_id": target["image_id"], "iscrowd": 0,
                                    "category_id": CATEGORY_IDS[label], "bbox": [box[0], box[1], w, h], "area": w * h})
        return coco_from_dict({"images": images, "annotations": annotations,
                               "categories": self.categories})


def coco_from_dict(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


class TinyBatchSampler:
    """Shuffled global batches of ``batch_size * world_size``; each rank takes its slice, so any
    world size sees the same global batches."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = get_rank(), get_world_size()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)).tolist()
        global_batch = self.batch_size * self.world_size
        for b in range(len(self)):
            start = b * global_batch + self.rank * self.batch_size
            yield order[start:start + self.batch_size]


def build_model(cfg: Config) -> nn.Module:
    return TinyDetector(cfg.model.num_classes, cfg.model.dropout)


def build_train_data(cfg: Config):
    dataset = TinyDataset(cfg.data.num_train, flip=cfg.data.flip, sigterm_at=cfg.data.sigterm_at, nan_at=cfg.data.nan_at)
    return dataset, TinyBatchSampler(cfg.data.num_train, cfg.train.batch_size, cfg.train.seed)


def build_val_data(cfg: Config):
    dataset = TinyDataset(cfg.data.num_val, flip=False)
    return dataset, CocoEvaluator(dataset.coco(), CATEGORY_IDS)


BUILDERS = {"build_model": build_model, "build_train_data": build_train_data, "build_val_data": build_val_data}
