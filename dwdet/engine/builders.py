"""The one place where the engine meets the detector and the datasets (imported lazily, so the
engine and its tests do not depend on them). Each builder takes the whole resolved config."""
from __future__ import annotations

from typing import Any

from torch import nn

from dwdet.config import Config
from dwdet.engine.evaluation import CocoEvaluator
from dwdet.utils.dist import get_rank, get_world_size

__all__ = ["build_model", "build_train_data", "build_val_data", "val_categories"]


def build_model(cfg: Config) -> nn.Module:
    """The detector described by ``cfg.model`` and ``cfg.loss``."""
    from dwdet.models import build_detector
    return build_detector(cfg)


def build_train_data(cfg: Config) -> tuple[Any, Any]:
    """(training dataset, this rank's aspect-ratio grouped batch sampler with ``set_epoch``)."""
    from dwdet.data import build_batch_sampler, build_dataset
    dataset = build_dataset(cfg.data, split="train")
    sampler = build_batch_sampler(dataset, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                                  rank=get_rank(), world_size=get_world_size())
    return dataset, sampler


def build_val_data(cfg: Config) -> tuple[Any, CocoEvaluator]:
    """(validation dataset, its COCO evaluator): the dataset exposes its pycocotools ``coco`` and
    ``cat_ids`` (``cat_ids[label]`` is the category id of 0-based label ``label``)."""
    from dwdet.data import build_dataset
    dataset = build_dataset(cfg.data, split="val")
    return dataset, CocoEvaluator(dataset.coco, dataset.cat_ids)


def val_categories(cfg: Config) -> list[dict[str, Any]]:
    """The validation set's COCO categories (``{"id", "name", ...}``) in label order."""
    _, evaluator = build_val_data(cfg)
    return evaluator.coco_gt.loadCats(evaluator.category_ids)
