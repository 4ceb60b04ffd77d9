# DW, R-101, multi-scale 2x: 46.2 AP on test-dev (table 7).
_base_ = "dw_r50_fpn_refine_mstrain_2x_coco.py"
model = dict(backbone="resnet101", refine=False)
