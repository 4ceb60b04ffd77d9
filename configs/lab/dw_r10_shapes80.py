# DW on shapes80, the synthetic benchmark with COCO's statistics, sized for a CPU: 80 classes
# (8 shapes x 10 hues), 1-2 objects on 384 px images (about 1.5e5 (point, class) scores per object,
# as on COCO), objects from COCO-small to -large; ResNet-10 pretrained on the benchmark's own objects
# (weights/resnet10_shapes80.pth, made by lab/pretrain_backbone.py) with frozen BatchNorm, as the
# paper's ResNets start from ImageNet. The test split (500 images from its own seed, data.params.test_seed)
# is for reported numbers only: choices are made on val. See docs/studies/shapes80.md.
_base_ = "_base_/lab.py"
model = dict(num_classes=80, backbone="resnet10", backbone_weights="weights/resnet10_shapes80.pth",
             backbone_norm="frozen_bn", channels=64, min_size=(384,), max_size=384)
data = dict(type="synthetic", root="data/shapes80", seed=0,
            params=dict(colours=10, num_train=1000, num_val=500, num_test=500, image_size=384, min_objects=1,
                        max_objects=2))
train = dict(epochs=6, batch_size=8, lr=0.02, warmup_iters=100, lr_steps=(5,), num_workers=0, log_interval=25,
             checkpoint_interval=6)
eval = dict(interval=6, batch_size=8, num_workers=0)
