"""Datasets (COCO format), the data sources that ``data.type`` names, the flip transform and batching."""
from .coco import CocoDetection, DatasetStats, load_coco
from .sampler import GroupedBatchSampler, SeededDataset, aspect_ratio_groups, collate
from .sources import data_source, data_sources, register_data_source
from .transforms import RandomHorizontalFlip, hflip

__all__ = [
    "CocoDetection", "DatasetStats", "load_coco",
    "GroupedBatchSampler", "SeededDataset", "aspect_ratio_groups", "collate",
    "data_source", "data_sources", "register_data_source",
    "RandomHorizontalFlip", "hflip",
]
