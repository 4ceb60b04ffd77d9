# GFL on the tree crowns with EfficientNet-Lite0 (ImageNet): the DW config with GFL's loss (the
# settings of configs/gfl_r50_fpn_1x_coco.py, as on patterns80).
_base_ = "dw_effl0_treecrowns.py"
loss = dict(_replace_=True, type="gfl", topk=9, anchor_scale=8.0, beta=2.0, box_weight=2.0)
