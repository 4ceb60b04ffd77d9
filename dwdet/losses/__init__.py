"""Training losses with the dwdet loss contract: ``loss(cls_logits, bbox_preds, centerness, targets) -> dict``."""
from dwdet.losses.dw import DWLoss
from dwdet.losses.fcos import FCOSLoss, assign_fcos

__all__ = ["DWLoss", "FCOSLoss", "assign_fcos"]
