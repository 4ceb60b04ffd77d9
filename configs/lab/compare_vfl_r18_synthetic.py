# VFL in lab/compare.py's "assigners" study: configs/lab/compare_r18_synthetic.py with VFL's loss
# (the settings of configs/vfl_r50_fpn_1x_coco.py).
_base_ = "compare_r18_synthetic.py"
loss = dict(_replace_=True, type="vfl", topk=9, anchor_scale=8.0, alpha=0.75, gamma=2.0, box_weight=2.0)
