"""Training and evaluation engine: trainer, checkpoints, COCO evaluation."""
from dwdet.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dwdet.engine.evaluation import CocoEvaluator, coco_bbox_eval, evaluate
from dwdet.engine.trainer import NonFiniteLossError, Trainer, train_one_epoch

__all__ = ["CheckpointError", "CocoEvaluator", "NonFiniteLossError", "Trainer", "coco_bbox_eval", "evaluate",
           "load_checkpoint", "save_checkpoint", "train_one_epoch"]
