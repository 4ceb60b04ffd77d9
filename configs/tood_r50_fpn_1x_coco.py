# TOOD's task-aligned learning without the T-head, R-50, 1x, on our point head (MMDetection's
# tood_r50_fpn_1x_coco, with it: 42.4 AP on COCO val). ATSS warm-up for the first 4 of 12 epochs.
_base_ = "dw_r50_fpn_1x_coco.py"
loss = dict(_replace_=True, type="tood", topk=13, alpha=1.0, beta=6.0, qfl_beta=2.0, box_weight=2.0,
            warmup_epochs=4, atss_topk=9, anchor_scale=8.0, focal_alpha=0.25, focal_gamma=2.0)
