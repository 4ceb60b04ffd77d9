# DW on patterns80 with the recipe that fits 20 minutes on a 2-core CPU: AdamW (lr 4e-4 per 16
# images, weight decay 0.05) instead of SGD, bf16 autocast, 14 epochs (1750 iterations of 8 images)
# with the lr step after 12; why AdamW rather than SGD here: docs/studies/patterns80.md.
_base_ = "dw_r10_patterns80.py"
# With train.ema=True, the weight average spans about 200 of the 1750 iterations (README, "Training
# and evaluation"); the defaults, sized for COCO's 90k iterations, would barely average here.
train = dict(optimizer="adamw", lr=4e-4, weight_decay=0.05, amp="bf16", epochs=14, lr_steps=(12,),
             checkpoint_interval=14, ema_decay=0.995, ema_tau=100.0)
eval = dict(interval=14)
