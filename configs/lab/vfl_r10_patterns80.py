# VFL on patterns80: the DW config with VFL's loss (the settings of configs/vfl_r50_fpn_1x_coco.py, as on shapes80).
_base_ = "dw_r10_patterns80.py"
loss = dict(_replace_=True, type="vfl", topk=9, anchor_scale=8.0, alpha=0.75, gamma=2.0, box_weight=2.0)
