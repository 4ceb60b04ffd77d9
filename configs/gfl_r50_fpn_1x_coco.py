# GFL without the distribution head (QFL + GIoU), R-50, 1x, on our point head (MMDetection's
# gfl_r50_fpn_1x_coco, with DFL: 40.2 AP on COCO val).
_base_ = "dw_r50_fpn_1x_coco.py"
loss = dict(_replace_=True, type="gfl", topk=9, anchor_scale=8.0, beta=2.0, box_weight=2.0)
