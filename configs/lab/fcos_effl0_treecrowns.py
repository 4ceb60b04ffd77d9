# The FCOS baseline on the tree-crown benchmark with EfficientNet-Lite0 pretrained on ImageNet
# (see dw_effl0_treecrowns.py).
_base_ = "fcos_r10_treecrowns.py"
model = dict(backbone="efficientnet_lite0", backbone_weights="weights/efficientnet_lite0_imagenet.pth")
