# ATSS in lab/compare.py's "assigners" study: configs/lab/compare_r18_synthetic.py with ATSS's loss
# (the settings of configs/atss_r50_fpn_1x_coco.py).
_base_ = "compare_r18_synthetic.py"
loss = dict(_replace_=True, type="atss", topk=9, anchor_scale=8.0, focal_alpha=0.25, focal_gamma=2.0, box_weight=2.0)
