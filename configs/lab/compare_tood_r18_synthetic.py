# TOOD in lab/compare.py's "assigners" study: configs/lab/compare_r18_synthetic.py with TOOD's loss.
# The ATSS warm-up keeps the recipe's share of the schedule: 4 of 12 epochs there, 2 of 6 here.
_base_ = "compare_r18_synthetic.py"
loss = dict(_replace_=True, type="tood", topk=13, alpha=1.0, beta=6.0, qfl_beta=2.0, box_weight=2.0,
            warmup_epochs=2, atss_topk=9, anchor_scale=8.0, focal_alpha=0.25, focal_gamma=2.0)
