# VFL on the tree crowns with EfficientNet-Lite0 (ImageNet): the DW config with VFL's loss (the
# settings of configs/vfl_r50_fpn_1x_coco.py, as on patterns80).
_base_ = "dw_effl0_treecrowns.py"
loss = dict(_replace_=True, type="vfl", topk=9, anchor_scale=8.0, alpha=0.75, gamma=2.0, box_weight=2.0)
