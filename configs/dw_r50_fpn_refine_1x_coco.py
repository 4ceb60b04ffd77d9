# DW + box refinement, R-50, 1x: 42.1 AP (released model; 42.2 in the paper).
_base_ = "dw_r50_fpn_1x_coco.py"
model = dict(refine=True)
