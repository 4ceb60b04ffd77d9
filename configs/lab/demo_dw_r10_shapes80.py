# The model `make demo` evaluates (weights/dw_r10_shapes16_demo.pth): DW on a small cut of shapes80
# ("shapes16": its look; two of its ten hues, so 16 classes; 3-6 objects of 16 px and more on 192 px
# images), from the ResNet-10 pretrained 2200 steps (weights/resnet10_shapes80_long.pth), trained by
#   python tools/train.py configs/lab/demo_dw_r10_shapes80.py --work-dir work_dirs/demo_model
# and exported by tools/export_checkpoint.py. See docs/benchmarks.md ("The demo").
_base_ = "dw_r10_shapes80.py"
model = dict(num_classes=16, backbone_weights="weights/resnet10_shapes80_long.pth", min_size=(192,), max_size=192)
data = dict(root="data/shapes16-demo",
            params=dict(colours=2, num_train=2000, num_val=100, num_test=0, image_size=192, min_objects=3, max_objects=6,
                        min_object_size=16))
train = dict(epochs=8, batch_size=8, lr=0.02, warmup_iters=100, lr_steps=(7,), log_interval=25, checkpoint_interval=8)
eval = dict(interval=8, batch_size=8)
