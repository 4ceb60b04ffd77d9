# The label-assignment comparison of lab/compare.py, sized so that one run takes a few minutes on
# a 2-core CPU: ResNet-18 (GroupNorm, from scratch), 128 px images of the synthetic shapes without
# clutter strokes. Every method of the comparison is this config plus a few overrides.
_base_ = "dw_r18_synthetic.py"
model = dict(min_size=(128,), max_size=128)
data = dict(root="data/synthetic-compare",
            params=dict(num_train=800, num_val=200, num_test=200, image_size=128, max_objects=6, min_object_size=10,
                        max_blobs=2, max_strokes=0))
train = dict(epochs=6, batch_size=8, lr=0.04, warmup_iters=200, lr_steps=(5,), num_workers=0, log_interval=20,
             checkpoint_interval=6)
eval = dict(interval=6, batch_size=16, num_workers=0)
