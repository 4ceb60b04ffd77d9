# DW on the tree-crown benchmark (real aerial images, one class; `make treecrowns` builds
# data/treecrowns from the pinned deepforest 2.1.0 wheel): 320 px tiles; train on four images' upper
# parts, val and test on strips of the two Yellowstone images that training never sees. The backbone
# is the ResNet-10 pretrained on synthetic shapes (weights/resnet10_shapes80_long.pth): other
# classes than the detector's, and no trees. Scale jitter of +-20 % around the tiles' own size
# (crowns 8-107 px), flips, AdamW as on patterns80, 40 epochs of 20 iterations (800). See
# docs/studies/treecrowns.md.
_base_ = "_base_/lab.py"
model = dict(num_classes=1, backbone="resnet10", backbone_weights="weights/resnet10_shapes80_long.pth",
             backbone_norm="frozen_bn", channels=64, min_size=(256, 288, 320, 352, 384), max_size=384,
             test_min_size=320)
data = dict(type="coco", root="data/treecrowns", train_images="train", train_ann="annotations/instances_train.json",
            val_images="val", val_ann="annotations/instances_val.json", test_images="test",
            test_ann="annotations/instances_test.json")
train = dict(optimizer="adamw", lr=4e-4, weight_decay=0.05, amp="bf16", epochs=40, batch_size=8, warmup_iters=100,
             lr_steps=(34,), num_workers=0, log_interval=9, checkpoint_interval=40)
eval = dict(interval=10, batch_size=8, num_workers=0)
