# `make demo`: DW on a small cut of shapes80 (the same 80 classes and look, 256 px images, 600 of
# them), from the shipped pretrained ResNet-10, trained and evaluated on the CPU in about two minutes.
_base_ = "dw_r10_shapes80.py"
model = dict(min_size=(256,), max_size=256)
data = dict(root="data/shapes80-demo", params=dict(num_train=600, num_val=100, image_size=256))
train = dict(epochs=2, batch_size=8, lr=0.02, warmup_iters=50, lr_steps=(), log_interval=10, checkpoint_interval=2)
eval = dict(interval=2, batch_size=8)
