"""Training losses. A training step reads: the detector's head outputs -> ``prepare_batch`` -> a
loss's ``assign`` (one of the ``assign_*`` functions) -> its ``terms``; see docs/architecture.md.

``LOSSES`` maps each value of the config key ``loss.type`` to its loss."""
from dwdet.losses.atss import ATSSLoss, assign_atss
from dwdet.losses.batch import Batch, check_targets, prepare_batch
from dwdet.losses.common import Assignment, ClassWeights, PointLoss
from dwdet.losses.dw import DWLoss, assign_dw
from dwdet.losses.fcos import FCOSLoss, assign_fcos
from dwdet.losses.gfl import GFLLoss
from dwdet.losses.tood import TOODLoss, assign_task_aligned
from dwdet.losses.vfl import VFLLoss

LOSSES = {"fcos": FCOSLoss, "atss": ATSSLoss, "gfl": GFLLoss, "vfl": VFLLoss, "tood": TOODLoss, "dw": DWLoss}

__all__ = ["ATSSLoss", "Assignment", "Batch", "ClassWeights", "DWLoss", "FCOSLoss", "GFLLoss", "LOSSES", "PointLoss",
           "TOODLoss", "VFLLoss", "assign_atss", "assign_dw", "assign_fcos", "assign_task_aligned", "check_targets",
           "prepare_batch"]
