# DW on patterns80: shapes80 with classes that a detector can read at every point of an object, as
# a texture: fill pattern (8) x hue (10) on filled shapes drawn at random. The same statistics as
# shapes80 (80 classes, 1-2 objects on 384 px images, about 1.4e5 (point, class) scores per object
# as on COCO, objects from COCO-small to -large); ResNet-10 pretrained on the benchmark's own
# objects (weights/resnet10_patterns80.pth, made by lab/pretrain_backbone.py --patterns) with
# frozen BatchNorm. See docs/studies/patterns80.md.
_base_ = "dw_r10_shapes80.py"
model = dict(backbone_weights="weights/resnet10_patterns80.pth")
data = dict(root="data/patterns80", params=dict(patterns=True, labels="class"))
