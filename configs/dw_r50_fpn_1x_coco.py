# DW, R-50, 1x: 41.5 AP on COCO val with the released model.
_base_ = ["_base_/dw_r50_fpn.py", "_base_/coco.py", "_base_/schedule_1x.py"]
