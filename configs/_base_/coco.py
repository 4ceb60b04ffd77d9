# COCO 2017 in the usual layout under data/coco.
data = dict(
    type="coco",
    root="data/coco",
    train_images="train2017",
    train_ann="annotations/instances_train2017.json",
    val_images="val2017",
    val_ann="annotations/instances_val2017.json",
    test_images=None,  # a held-out split, evaluated only to report (lab/compare.py --split test);
    test_ann=None,  # COCO's test-dev has no public annotations, so none here
    seed=0,
    params=dict(),
    flip=0.5,  # training: the probability of a left-right flip,
    vflip=0.0,  # of a top-bottom one (images with no up: aerial, microscopy),
    transpose=0.0,  # of swapping rows and columns (with both flips at 0.5: any of a square's 8 symmetries)
    on_bad_image="error",  # or "skip" (counted and warned)
    on_unknown_category="error",  # or "skip"
)
