# DW for your own COCO-format data on a CPU (README, "Your own data"): ResNet-18 with ImageNet
# weights (downloaded once into torch's cache; offline, set model.backbone_weights to a local .pth,
# a dwdet checkpoint, or None to train from scratch), 512 px images, a 64-channel FPN and head, and
# AdamW, which reaches a usable model in far fewer iterations than SGD on a CPU (docs/studies/patterns80.md).
# The paths below are examples: set data.root and the four file names for your data.
_base_ = "dw_r50_fpn_1x_coco.py"
model = dict(backbone="resnet18", channels=64, min_size=(512,), max_size=512)
data = dict(root="data/mine", train_images="train", train_ann="annotations/train.json", val_images="val",
            val_ann="annotations/val.json")
train = dict(epochs=12, batch_size=4, optimizer="adamw", lr=4e-4, weight_decay=0.05, warmup_iters=100,
             lr_steps=(10,), num_workers=2, log_interval=10, keep_checkpoints=2)
eval = dict(interval=3, batch_size=4, num_workers=2)
