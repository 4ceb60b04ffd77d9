# `make demo`: DW on a small cut of shapes80 (its look and pretrained ResNet-10; two of its ten hues,
# so 16 classes; 3-6 objects on 256 px images), trained and evaluated on the CPU in about two minutes.
_base_ = "dw_r10_shapes80.py"
model = dict(num_classes=16, min_size=(256,), max_size=256)
data = dict(root="data/shapes16-demo",
            params=dict(colours=2, num_train=600, num_val=100, image_size=256, min_objects=3, max_objects=6,
                        min_object_size=12))
train = dict(epochs=2, batch_size=8, lr=0.02, warmup_iters=30, lr_steps=(), log_interval=10, checkpoint_interval=2)
eval = dict(interval=2, batch_size=8)
