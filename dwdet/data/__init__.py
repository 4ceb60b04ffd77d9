"""Datasets (COCO format), the data sources that ``data.type`` names, the flips and batching."""
from .coco import CocoDetection, DatasetStats, load_coco
from .sampler import GroupedBatchSampler, SeededDataset, aspect_ratio_groups, collate
from .sources import data_source, data_sources, register_data_source
from .transforms import RandomFlips, hflip, transpose, vflip

__all__ = [
    "CocoDetection", "DatasetStats", "load_coco",
    "GroupedBatchSampler", "SeededDataset", "aspect_ratio_groups", "collate",
    "data_source", "data_sources", "register_data_source",
    "RandomFlips", "hflip", "transpose", "vflip",
]
