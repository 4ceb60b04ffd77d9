# DW + box refinement, R-50, multi-scale (short side 480-960) 2x: 44.8 AP (released model).
_base_ = "dw_r50_fpn_refine_1x_coco.py"
model = dict(min_size=tuple(range(480, 961)), test_min_size=800)
train = dict(epochs=24, lr_steps=(16, 22))
