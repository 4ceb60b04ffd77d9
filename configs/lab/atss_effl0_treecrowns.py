# ATSS on the tree crowns with EfficientNet-Lite0 (ImageNet): the DW config with ATSS's loss (the
# settings of configs/atss_r50_fpn_1x_coco.py, as on patterns80).
_base_ = "dw_effl0_treecrowns.py"
loss = dict(_replace_=True, type="atss", topk=9, anchor_scale=8.0, focal_alpha=0.25, focal_gamma=2.0, box_weight=2.0)
