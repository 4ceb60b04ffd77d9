"""Datasets (COCO format, synthetic shapes), the flip transform and batching."""
from .coco import CocoDetection, DatasetStats, load_coco
from .sampler import GroupedBatchSampler, SeededDataset, aspect_ratio_groups, collate
from .synthetic import SHAPE_CLASSES, SplitPaths, SyntheticConfig, ensure_synthetic, generate_synthetic, split_paths
from .transforms import RandomHorizontalFlip, hflip

__all__ = [
    "CocoDetection", "DatasetStats", "load_coco",
    "GroupedBatchSampler", "SeededDataset", "aspect_ratio_groups", "collate",
    "SHAPE_CLASSES", "SplitPaths", "SyntheticConfig", "ensure_synthetic", "generate_synthetic", "split_paths",
    "RandomHorizontalFlip", "hflip",
]
