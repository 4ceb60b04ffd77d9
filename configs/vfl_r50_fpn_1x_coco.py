# VFL without the star-shaped refinement (VFL + GIoU), R-50, 1x, on our point head (MMDetection's
# vfnet_r50_fpn_1x_coco, with it: 41.6 AP on COCO val).
_base_ = "dw_r50_fpn_1x_coco.py"
loss = dict(_replace_=True, type="vfl", topk=9, anchor_scale=8.0, alpha=0.75, gamma=2.0, box_weight=2.0)
