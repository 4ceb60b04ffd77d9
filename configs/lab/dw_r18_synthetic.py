# DW on the synthetic shapes benchmark, sized for a CPU: ResNet-18 trained from scratch (no
# download), 256 px images, 64-channel FPN and head. `make demo` runs this.
_base_ = "_base_/lab.py"
model = dict(num_classes=8, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=64,
             min_size=(256,), max_size=256)
data = dict(type="synthetic", root="data/synthetic", seed=0,
            params=dict(num_train=400, num_val=100, image_size=256))
train = dict(epochs=4, batch_size=4, lr=0.04, warmup_iters=100, lr_steps=(3,), num_workers=1, log_interval=10)
eval = dict(interval=4, batch_size=4, num_workers=1)
