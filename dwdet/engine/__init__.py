"""Training and evaluation engine: trainer, checkpoints, COCO evaluation."""
from dwdet.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dwdet.engine.evaluation import CocoEvaluator, coco_bbox_eval, evaluate
from dwdet.engine.loop import NonFiniteLossError, train_one_epoch
from dwdet.engine.trainer import RunFolderInUseError, Trainer, check_new_run_folder

__all__ = ["CheckpointError", "CocoEvaluator", "NonFiniteLossError", "RunFolderInUseError", "Trainer",
           "check_new_run_folder", "coco_bbox_eval", "evaluate", "load_checkpoint", "save_checkpoint",
           "train_one_epoch"]
