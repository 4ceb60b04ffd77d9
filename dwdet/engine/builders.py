"""The one place where the engine meets the detector, the losses and the datasets: each builder
takes the whole resolved config (see configs/_base_/*.py for the keys)."""
from __future__ import annotations

import os
from typing import Any

from torch import nn
from torch.utils.data import DistributedSampler

from dwdet.config import Config
from dwdet.engine.evaluation import CocoEvaluator
from dwdet.utils.dist import get_rank, get_world_size

__all__ = ["build_dataset", "build_loss", "build_model", "build_train_data", "build_val_data", "val_categories"]


def build_loss(cfg: Config) -> nn.Module:
    """``cfg.loss.type`` picks the loss (a key of ``dwdet.losses.LOSSES``: fcos, atss, gfl, vfl,
    tood, dw); its other keys are the loss's arguments."""
    from dwdet.losses import LOSSES
    kwargs = cfg.loss.to_dict()
    kind = kwargs.pop("type")
    if kind not in LOSSES:
        raise ValueError(f"config key loss.type must be one of {sorted(LOSSES)}, got {kind!r}")
    try:
        return LOSSES[kind](cfg.model.num_classes, **kwargs)
    except (TypeError, ValueError) as err:  # an unknown key or a bad value: say it is the loss config's
        raise ValueError(f"config key loss (type {kind!r}): {err}") from None


def build_model(cfg: Config) -> nn.Module:
    """The detector described by ``cfg.model``: ``type`` "fcos" is ours, with the loss of
    ``cfg.loss``; "torchvision_fcos" is torchvision's FCOS (its own loss; ``cfg.loss`` is unused)
    on the same backbone and inputs, for comparisons."""
    from dwdet.models import build_fcos, build_torchvision_fcos
    kwargs = cfg.model.to_dict()
    kind, num_classes = kwargs.pop("type", "fcos"), kwargs.pop("num_classes")  # runs saved before model.type were ours
    if kind == "fcos":
        return build_fcos(num_classes, build_loss(cfg), **kwargs)
    if kind == "torchvision_fcos":
        if kwargs.pop("refine"):
            raise ValueError("config key model.refine=True: torchvision's FCOS has no box refinement")
        return build_torchvision_fcos(num_classes, **kwargs)
    raise ValueError(f"config key model.type must be 'fcos' or 'torchvision_fcos', got {kind!r}")


def build_dataset(cfg: Config, split: str) -> Any:
    """``cfg.data.type``: "coco" (``root`` + ``{split}_images`` / ``{split}_ann``) or "synthetic"
    (generated under ``root`` from ``seed`` and ``params`` if not there yet). Training images are
    flipped with probability ``flip``; images without boxes are skipped in training only."""
    from dwdet.data import CocoDetection, RandomHorizontalFlip, ensure_synthetic
    data = cfg.data
    if data.type == "synthetic":
        paths = ensure_synthetic(data.root, seed=data.seed, **data.params.to_dict())[split]
        images, annotations = str(paths.images), str(paths.annotations)
    elif data.type == "coco":
        images, annotations = os.path.join(data.root, data[f"{split}_images"]), os.path.join(data.root, data[f"{split}_ann"])
    else:
        raise ValueError(f"config key data.type must be 'coco' or 'synthetic', got {data.type!r}")
    train = split == "train"
    flip = RandomHorizontalFlip(data.flip) if train and data.flip > 0 else None
    return CocoDetection(images, annotations, flip, filter_empty=train, on_bad_image=data.on_bad_image,
                         on_unknown_category=data.on_unknown_category)


def build_train_data(cfg: Config) -> tuple[Any, Any]:
    """(training dataset, this rank's aspect-ratio grouped batch sampler with ``set_epoch``).

    Every sample carries its own seed for the random flip, so an epoch is the same after a resume
    whatever the number of workers."""
    from dwdet.data import GroupedBatchSampler, SeededDataset, aspect_ratio_groups
    dataset = build_dataset(cfg, "train")
    sampler = DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=True,
                                 seed=cfg.train.seed)
    batch_sampler = GroupedBatchSampler(sampler, aspect_ratio_groups(dataset.image_sizes), cfg.train.batch_size)
    return SeededDataset(dataset), batch_sampler


def build_val_data(cfg: Config) -> tuple[Any, CocoEvaluator]:
    """(validation dataset, its COCO evaluator)."""
    dataset = build_dataset(cfg, "val")
    return dataset, CocoEvaluator(dataset.coco, dataset.cat_ids)


def val_categories(cfg: Config) -> list[dict[str, Any]]:
    """The validation set's COCO categories (``{"id", "name", ...}``) in label order."""
    _, evaluator = build_val_data(cfg)
    return evaluator.coco_gt.loadCats(evaluator.category_ids)
