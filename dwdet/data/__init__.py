"""Datasets (COCO format, synthetic shapes), the flip transform and batching."""
from .coco import CocoDetection, DatasetStats, load_coco
from .sampler import (GroupedBatchSampler, SeededDataset, ShardSampler, aspect_ratio_groups,
                      build_eval_loader, build_train_loader, collate)
from .synthetic import SHAPE_CLASSES, SplitPaths, SyntheticConfig, ensure_synthetic, generate_synthetic, split_paths
from .transforms import RandomHorizontalFlip, hflip

__all__ = [
    "CocoDetection", "DatasetStats", "load_coco",
    "GroupedBatchSampler", "SeededDataset", "ShardSampler", "aspect_ratio_groups",
    "build_eval_loader", "build_train_loader", "collate",
    "SHAPE_CLASSES", "SplitPaths", "SyntheticConfig", "ensure_synthetic", "generate_synthetic", "split_paths",
    "RandomHorizontalFlip", "hflip",
]
