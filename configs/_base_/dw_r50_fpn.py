# The DW detector of the paper: ResNet-50 + FPN (P3-P7) + FCOS head, DW loss with the released semantics.
model = dict(
    type="fcos",  # our detector; "torchvision_fcos": torchvision's FCOS (and loss) on the same backbone
    num_classes=None,  # from the training annotation file's categories (an explicit value must agree)
    backbone="resnet50",  # a torchvision ResNet/ResNeXt, or efficientnet_lite0 (weights: tools/fetch_backbone.py)
    backbone_weights="IMAGENET1K_V1",  # a torchvision weights name, a local .pth path, or None
    backbone_norm="frozen_bn",
    frozen_stages=1,  # the stem and stage 1 (up to stride 4) get no gradient (4: the whole backbone), with frozen_bn
    channels=256,
    refine=False,
    min_size=(800,),  # short side; several sizes: one drawn per training image (multi-scale)
    max_size=1333,
    test_min_size=None,  # defaults to min_size
    score_thresh=0.05,
    pre_nms_top_n=1000,
    nms_thresh=0.6,
    detections_per_img=100,
    objectness_power=1.0,  # score = sigmoid(cls) * sigmoid(objectness) ** this (1 as released; 0: the class score)
)
loss = dict(
    type="dw",
    variant="released",  # or "paper"
    beta=5.0,
    mu=5.0,
    mu_den=None,  # 3 (released) or mu (paper)
    gamma1=2.0,
    gamma2=2.0,
    center_prior="soft",  # soft | hard | threshold | topk (table 4)
    sigma=1.11,
    prior_threshold=1.7,
    prior_topk=9,
    neg_weighting="pneg_ineg",  # pneg_ineg | pneg | ineg | one_minus_wpos | none (table 5)
    pos_reweight=None,
    pos_cls_target="one",  # one (released) | iou: the positive score learns its box's IoU
    focal_alpha=0.25,
    neg_scale=1.0,  # factor of the negative term (1 = released)
    neg_reference_scores=None,  # None = released; e.g. 2.4e5: the negative term's strength as on COCO
    neg_reference_power=0.5,  # at any (point, class) scores per object (docs/studies/synthetic128.md)
    bag_levels="all",  # all (released) | fcos_ranges: each GT's bag on the levels FCOS gives its size
    # none (released) | centerness: FCOS's centerness BCE on the objectness | iou: BCE towards the box's IoU
    objectness_target="none",
    fcos_warmup_epochs=0,  # 0 (released) | N: the first N epochs trained with FCOS's loss
)
