"""Training losses with the dwdet loss contract: ``loss(cls_logits, bbox_preds, centerness, targets) -> dict``.

``LOSSES`` maps each value of the config key ``loss.type`` to its loss."""
from dwdet.losses.atss import ATSSLoss, assign_atss
from dwdet.losses.dw import DWLoss
from dwdet.losses.fcos import FCOSLoss, assign_fcos
from dwdet.losses.gfl import GFLLoss
from dwdet.losses.tood import TOODLoss, assign_task_aligned
from dwdet.losses.vfl import VFLLoss

LOSSES = {"fcos": FCOSLoss, "atss": ATSSLoss, "gfl": GFLLoss, "vfl": VFLLoss, "tood": TOODLoss, "dw": DWLoss}

__all__ = ["ATSSLoss", "DWLoss", "FCOSLoss", "GFLLoss", "LOSSES", "TOODLoss", "VFLLoss", "assign_atss", "assign_fcos",
           "assign_task_aligned"]
