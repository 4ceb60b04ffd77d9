# ATSS, R-50, 1x, on our point head (MMDetection's atss_r50_fpn_1x_coco: 39.4 AP on COCO val).
_base_ = "dw_r50_fpn_1x_coco.py"
loss = dict(_replace_=True, type="atss", topk=9, anchor_scale=8.0, focal_alpha=0.25, focal_gamma=2.0, box_weight=2.0)
