"""The FCOS detector of the DW paper: backbone + FPN, head (with optional box refinement), detector."""
from dwdet.models.backbone import BACKBONES, build_backbone, build_efficientnet, build_resnet
from dwdet.models.detector import FCOSDetector, build_fcos
from dwdet.models.head import FCOSHead, refine_distances
from dwdet.models.points import anchor_points, flatten_levels, level_points
from dwdet.models.torchvision_fcos import build_torchvision_fcos
from dwdet.models.transform import DetectionTransform

__all__ = ["BACKBONES", "DetectionTransform", "FCOSDetector", "FCOSHead", "anchor_points", "build_backbone",
           "build_efficientnet", "build_fcos", "build_resnet", "build_torchvision_fcos", "flatten_levels",
           "level_points", "refine_distances"]
