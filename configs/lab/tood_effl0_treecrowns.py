# TOOD on the tree crowns with EfficientNet-Lite0 (ImageNet): the DW config with TOOD's loss. Its
# ATSS warm-up is a third of the schedule as in the recipe (4 of 12 epochs); a study with another
# length sets loss.warmup_epochs to match.
_base_ = "dw_effl0_treecrowns.py"
loss = dict(_replace_=True, type="tood", topk=13, alpha=1.0, beta=6.0, qfl_beta=2.0, box_weight=2.0,
            warmup_epochs=4, atss_topk=9, anchor_scale=8.0, focal_alpha=0.25, focal_gamma=2.0)
