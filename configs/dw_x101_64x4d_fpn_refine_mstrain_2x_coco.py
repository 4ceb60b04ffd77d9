# DW + box refinement, ResNeXt-101-64x4d, multi-scale 2x: 48.7 AP on test-dev (table 7).
_base_ = "dw_r50_fpn_refine_mstrain_2x_coco.py"
model = dict(backbone="resnext101_64x4d")
