# The FCOS baseline of the paper's table 6 (38.6 AP): center sampling 1.5, focal loss, GIoU, centerness BCE.
_base_ = "dw_r50_fpn_1x_coco.py"
loss = dict(_replace_=True, type="fcos", center_radius=1.5, focal_alpha=0.25, focal_gamma=2.0)
