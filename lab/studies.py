"""The studies of lab/compare.py: which methods (a config plus overrides each) it trains and
compares, by study name. A method's name is its run folder, so a method shared by several studies
(the FCOS baseline, say) is trained once."""
from __future__ import annotations

from dataclasses import dataclass

DW_CONFIG = "configs/lab/compare_r18_synthetic.py"  # from scratch, 128 px, 8 classes
FCOS_CONFIG = "configs/lab/compare_fcos_r18_synthetic.py"
SYNTHETIC128 = (("fcos", "FCOS", FCOS_CONFIG), ("dw", "DW (released)", DW_CONFIG))
SYNTHETIC128_EPOCHS = 6
SYNTHETIC128_LRS = ("0.02", "0.04", "0.08", "0.16")  # SGD, per 16 images; 0.04 is the configs'
SHAPES80_DW = "configs/lab/dw_r10_shapes80.py"  # COCO's statistics, pretrained backbone
SHAPES80_FCOS = "configs/lab/fcos_r10_shapes80.py"
SHAPES80_EPOCHS = 6
SHAPES80 = (("s80_fcos", "FCOS", SHAPES80_FCOS), ("s80_dw", "DW (released)", SHAPES80_DW))
PATTERNS80_DW = "configs/lab/dw_r10_patterns80.py"  # the same statistics, classes readable as textures
PATTERNS80_FCOS = "configs/lab/fcos_r10_patterns80.py"
PATTERNS80_ADAMW_DW = "configs/lab/dw_r10_patterns80_adamw.py"  # the recipe that fits 20 minutes of this CPU
PATTERNS80_ADAMW_FCOS = "configs/lab/fcos_r10_patterns80_adamw.py"
PATTERNS80_ADAMW_EPOCHS = 14
TREECROWNS_DW = "configs/lab/dw_r10_treecrowns.py"  # real aerial images, one class (lab/make_treecrowns.py)
TREECROWNS_FCOS = "configs/lab/fcos_r10_treecrowns.py"
# the same benchmark on EfficientNet-Lite0 pretrained on ImageNet (`make imagenet-backbone`)
TREECROWNS_IMAGENET_DW = "configs/lab/dw_effl0_treecrowns.py"
TREECROWNS_IMAGENET_FCOS = "configs/lab/fcos_effl0_treecrowns.py"
# the tree-crown tiles at twice their size (crowns 16-214 px), jittered by +-20 % as at 1x
# the tiles flipped both ways and transposed: aerial images have no up, so each of a square's 8
# symmetries is another training image
TREECROWNS_D8 = ("data.vflip=0.5", "data.transpose=0.5")
TREECROWNS_X2 = ("model.min_size=(512,576,640,704,768)", "model.max_size=768", "model.test_min_size=640")
ADAMW_LRS = ("2e-4", "4e-4", "8e-4", "1.6e-3")  # the AdamW recipes' lr sweep (per 16 images); 4e-4 is theirs
SGD_LRS = ("0.01", "0.02", "0.04", "0.08")  # the SGD recipes' lr sweep; 0.02 is theirs
ADAMW = ("train.optimizer=adamw", "train.weight_decay=0.05")  # AdamW on the SGD recipe's schedule (6 epochs, fp32)
COCO_SCORES_PER_OBJECT = 2.4e5  # docs/studies/shapes80.md, the shapes80 statistics
PATTERNS80_SCORES_PER_OBJECT = 1.41e5  # tools/dataset_stats.py configs/lab/dw_r10_patterns80.py
PATTERNS80_MORE_OBJECTS = ("data.params.min_objects=4", "data.params.max_objects=6", "data.root=data/patterns80-o4to6")
PATTERNS80_MORE_OBJECTS_SCORES = 4.38e4  # the same, with the overrides above (4.70 objects per image)
# the "assigners" study's configs: point them at another benchmark by changing these
ASSIGNER_CONFIGS = {"fcos": FCOS_CONFIG, "atss": "configs/lab/compare_atss_r18_synthetic.py",
                    "gfl": "configs/lab/compare_gfl_r18_synthetic.py", "vfl": "configs/lab/compare_vfl_r18_synthetic.py",
                    "tood": "configs/lab/compare_tood_r18_synthetic.py", "dw": DW_CONFIG}
# DW's negative term at the strength it has on COCO, whatever the scores per object (loss.neg_reference_scores)
NEG_AS_ON_COCO = (f"loss.neg_reference_scores={COCO_SCORES_PER_OBJECT:g}",)
# a curve's axis: label, plot file, log scale, a reference (x, label) or None, and how a point on
# it names itself in tables
AXES = {"length": ("training length (epochs; lr step at 5/6 of each)", "ap_vs_length.png", False, None, "{:g} epochs"),
        "scores": ("(point, class) scores per object (the class count varied)", "ap_vs_scores_per_object.png", True,
                   (COCO_SCORES_PER_OBJECT, "COCO train2017"), "{:.2g} scores per object"),
        "objects": ("(point, class) scores per object (objects per image varied)", "ap_vs_objects_per_image.png",
                    True, (COCO_SCORES_PER_OBJECT, "COCO train2017"), "{:.2g} scores per object"),
        "lr": ("lr (per 16 images)", "ap_vs_lr.png", True, None, "lr {:g}")}
WARM_START = ("train.epochs=3", "train.lr=0.01", "train.warmup_iters=50", "train.lr_steps=(2,)", "eval.interval=3",
              "train.checkpoint_interval=3")


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    config: str
    overrides: tuple[str, ...] = ()
    all_seeds: bool = True  # False: only the first seed (single-seed reference points)
    init_from: str | None = None  # a method whose finished run of the same seed gives the initial weights
    curve: str | None = None  # methods of one curve label are one method at several points of an axis
    x: float | None = None  # its place on the curve's axis
    axis: str = "length"  # the curve's axis, a key of AXES
    # a method whose runs (trained with train.ema) this one evaluates with their trained weights
    # instead of their average: the plain recipe's runs, since the average never feeds back
    trained_weights_of: str | None = None
    # overrides of the evaluation alone (inference settings, e.g. model.objectness_power=3) for a
    # method that evaluates another's runs: one training, several ways to run it
    inference: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.inference and self.trained_weights_of is None:
            raise ValueError(f"method {self.name}: inference settings need trained_weights_of (the runs they evaluate)")

    @property
    def depends_on(self) -> str | None:
        """The method whose finished run of the same seed this one needs, if any."""
        return self.init_from or self.trained_weights_of


# the recipe's runs (trained with train.ema, the average never feeding back) evaluated with their
# trained weights: the patterns80 AdamW baselines of the studies that pair with those runs
PATTERNS80_TRAINED = (
    Method("p80a_fcos_trained", "FCOS", PATTERNS80_ADAMW_FCOS, ("train.ema=True",), trained_weights_of="p80a_fcos_ema"),
    Method("p80a_dw_trained", "DW (released)", PATTERNS80_ADAMW_DW, ("train.ema=True",),
           trained_weights_of="p80a_dw_ema"),
)

def schedule(epochs: int, step_fraction: float = 5 / 6) -> tuple[str, ...]:
    """Overrides for a run of ``epochs`` epochs with its lr step at the same fraction of every length."""
    step = max(1, round(step_fraction * epochs))
    return (f"train.epochs={epochs}", f"train.lr_steps=({step},)", f"eval.interval={epochs}",
            f"train.checkpoint_interval={epochs}")


# the tree crowns on ImageNet's backbone: 12 epochs (both detectors were ahead after 10 of 40), val
# every 2 epochs for the curve; with the 8 symmetries
TREECROWNS_E12 = (*schedule(12, 10 / 12), "eval.interval=2")
TREECROWNS_D8_E12 = (*TREECROWNS_D8, *TREECROWNS_E12)
# each detector's lr there, chosen on val (the study treecrowns_imagenet_lr, seed 0: FCOS 18.0,
# 19.5, 20.5, 20.3 AP at 4e-4 .. 3.2e-3; DW 14.5, 16.6, 17.5, 18.4, 18.3 at 2e-4 .. 3.2e-3); the
# other assigners take FCOS's
TREECROWNS_LRS = {"fcos": "1.6e-3", "dw": "1.6e-3"}


def _treecrowns_lr(kind: str) -> str:
    return TREECROWNS_LRS.get(kind, TREECROWNS_LRS["fcos"])


def _treecrowns_chosen(kind: str) -> tuple[str, ...]:
    """The tree crowns' setting chosen on val for a detector: 8 symmetries, 12 epochs, its lr."""
    return (*TREECROWNS_D8_E12, f"train.lr={_treecrowns_lr(kind)}")


# FCOS and the released DW on that setting (the lr study's runs at the chosen lr)
TREECROWNS_CHOSEN = tuple(Method(f"tc_{name}_effl0_d8_e12_lr{_treecrowns_lr(name)}", label, config,
                                 _treecrowns_chosen(name))
                          for name, label, config in (("fcos", "FCOS", TREECROWNS_IMAGENET_FCOS),
                                                      ("dw", "DW (released)", TREECROWNS_IMAGENET_DW)))
# the objectness learnt from geometry too (FCOS's centerness target), not from DW's predictions
# alone: its one-seed ablation on the tree crowns' val, and every seed for the setting's study
TREECROWNS_DW_CENTERNESS = Method(
    f"tc_dw_effl0_d8_e12_lr{_treecrowns_lr('dw')}_ctr", "DW + FCOS's centerness target on the objectness",
    TREECROWNS_IMAGENET_DW, (*_treecrowns_chosen("dw"), "loss.objectness_target=centerness"))
# the patterns80 AdamW configs' recipe as overrides, for the other benchmarks
ADAMW_RECIPE = (*ADAMW, "train.lr=4e-4", "train.amp=bf16", "train.ema_decay=0.995", "train.ema_tau=100",
                *schedule(PATTERNS80_ADAMW_EPOCHS))


def length_curves(curves, lengths: tuple[int, ...], plain_epochs: int,
                  every_seed: bool = False) -> tuple[Method, ...]:
    """Each curve ``(label, config, epochs -> (name, overrides))`` at every training length of
    ``lengths`` (epochs, the lr step at the same fraction of each): one curve of AP against length.
    The run at the config's own length (``plain_epochs``) is the plain ``name``, the others
    ``name_e{epochs}``; lengths other than the plain one train the first seed only unless
    ``every_seed``."""
    methods = []
    for label, config, at_length in curves:
        for epochs in lengths:
            name, overrides = at_length(epochs)
            plain = epochs == plain_epochs
            methods.append(Method(name if plain else f"{name}_e{epochs}", label, config,
                                  (*(() if plain else schedule(epochs)), *overrides),
                                  all_seeds=every_seed or plain, curve=label, x=epochs))
    return tuple(methods)


def length_study(methods: tuple[tuple[str, str, str], ...], lengths: tuple[int, ...], plain_epochs: int,
                 every_seed: bool = False) -> tuple[Method, ...]:
    """Each (name, label, config) unchanged at every training length (:func:`length_curves`)."""
    curves = tuple((label, config, lambda epochs, name=name: (name, ())) for name, label, config in methods)
    return length_curves(curves, lengths, plain_epochs, every_seed)


# DW's settings from the 128 px ablation as curves of :func:`length_curves`: the warm-up takes
# half of every schedule
SYNTHETIC128_DW_SETTINGS = (
    ("DW after half the schedule of FCOS's loss", DW_CONFIG,
     lambda epochs: (f"dw_fcoswarm{epochs // 2}", (f"loss.fcos_warmup_epochs={epochs // 2}",))),
    ("DW, bags on FCOS's levels for each size", DW_CONFIG,
     lambda epochs: ("dw_levels", ("loss.bag_levels=fcos_ranges",))),
)


def adamw_study(lengths: tuple[int, ...]) -> tuple[Method, ...]:
    """FCOS and DW on patterns80 with the AdamW recipe at several lengths (the full length with
    every seed, the shorter ones with the first), and FCOS with AdamW on the SGD recipe's 6 epochs at
    two learning rates, the sweep that chose the recipe's lr (first seed)."""
    sweep = tuple(Method(f"p80_fcos_adamw_lr{lr}", f"FCOS, AdamW lr {lr}, 6 epochs fp32", PATTERNS80_FCOS,
                         (*ADAMW, f"train.lr={lr}"), all_seeds=False) for lr in ("1e-3", "4e-4"))
    curves = length_study((("p80a_fcos", "FCOS", PATTERNS80_ADAMW_FCOS),
                           ("p80a_dw", "DW (released)", PATTERNS80_ADAMW_DW)), lengths, PATTERNS80_ADAMW_EPOCHS)
    return sweep + curves


def lr_study(methods: tuple[tuple[str, str, str], ...], recipe_lr: str = "4e-4", lrs: tuple[str, ...] = ADAMW_LRS,
             overrides: tuple[str, ...] = ()) -> tuple[Method, ...]:
    """Each (name, label, config) at every lr of ``lrs``, one curve of AP against lr per method, so
    that each method's lr is chosen on val for itself; the config's own lr (``recipe_lr``) is its
    plain run. ``overrides`` apply to every run (the recipe the lr is swept in)."""
    return tuple(Method(name if lr == recipe_lr else f"{name}_lr{lr}", label, config,
                        overrides if lr == recipe_lr else (*overrides, f"train.lr={lr}"), curve=label, x=float(lr),
                        axis="lr")
                 for name, label, config in methods for lr in lrs)


def objects_study() -> tuple[Method, ...]:
    """FCOS and DW on patterns80 with 1-2 objects per image (the runs of the patterns80 study) and
    4-6, nothing else changed; the x is the (point, class) scores per object. A third curve keeps
    DW's bags on FCOS's levels: with more objects, more of the coarse levels' points fall in the
    bags of several objects."""
    curves = (("p80_fcos", "FCOS", PATTERNS80_FCOS, ()), ("p80_dw", "DW (released)", PATTERNS80_DW, ()),
              ("p80_dw_levels", "DW, bags on FCOS's levels for each size", PATTERNS80_DW, ("loss.bag_levels=fcos_ranges",)))
    return tuple(Method(name + suffix, label, config, (*overrides, *options), curve=label, x=x, axis="objects")
                 for name, label, config, options in curves
                 for suffix, overrides, x in (("", (), PATTERNS80_SCORES_PER_OBJECT),
                                              ("_o4to6", PATTERNS80_MORE_OBJECTS, PATTERNS80_MORE_OBJECTS_SCORES)))


def class_count_study() -> tuple[Method, ...]:
    """FCOS and DW on patterns80 with 80, 8 and 1 annotated classes (one seed each below 80; 80 is
    the 3-seed run of the patterns80 study). The x is the (point, class) scores per object."""
    scores_per_class = PATTERNS80_SCORES_PER_OBJECT / 80
    variants = ((80, "class"), (8, "kind"), (1, "object"))
    return tuple(Method(name if classes == 80 else f"{name}_c{classes}", f"{label}, {classes} class{'es' * (classes > 1)}",
                        config,
                        () if classes == 80 else (f"data.params.labels={labels}", f"model.num_classes={classes}",
                                                  f"data.root=data/patterns80-{labels}"),
                        all_seeds=classes == 80, curve=label, x=classes * scores_per_class, axis="scores")
                 for name, label, config in (("p80_fcos", "FCOS", PATTERNS80_FCOS), ("p80_dw", "DW (released)", PATTERNS80_DW))
                 for classes, labels in variants)


STUDIES = {
    "methods": (
        Method("fcos", "FCOS", FCOS_CONFIG),
        Method("dw", "DW (released)", DW_CONFIG),
        Method("dw_paper", "DW (paper)", DW_CONFIG, ("loss.variant=paper",), False),
        Method("dw_refine", "DW + refine", DW_CONFIG, ("model.refine=True",), False),
        Method("torchvision_fcos", "torchvision FCOS", FCOS_CONFIG, ("model.type=torchvision_fcos",), False),
    ),
    # table 5 of the paper; its last row (P_neg and I_neg) is the "dw" method above
    "wneg": (
        Method("wneg_none", "w_pos only", DW_CONFIG, ("loss.neg_weighting=none",), False),
        Method("wneg_pneg", "P_neg", DW_CONFIG, ("loss.neg_weighting=pneg",), False),
        Method("wneg_ineg", "I_neg", DW_CONFIG, ("loss.neg_weighting=ineg",), False),
        Method("wneg_one_minus_wpos", "1 - w_pos", DW_CONFIG, ("loss.neg_weighting=one_minus_wpos",), False),
        Method("dw", "P_neg * I_neg (DW)", DW_CONFIG),
    ),
    # background pressure at 128 px: scaling the negative term up gives each object the pressure
    # of many more (point, class) scores, as on COCO
    "neg": (
        Method("dw", "DW (released)", DW_CONFIG),
        Method("dw_neg10", "DW, negative x10", DW_CONFIG, ("loss.neg_scale=10.0",)),
        Method("dw_neg100", "DW, negative x100", DW_CONFIG, ("loss.neg_scale=100.0",)),
        Method("dw_negref", "DW, negative as on COCO (square root)", DW_CONFIG, NEG_AS_ON_COCO),
        Method("dw_negref_p1", "DW, negative as on COCO (linear)", DW_CONFIG,
               (*NEG_AS_ON_COCO, "loss.neg_reference_power=1.0"), False),
    ),
    # why DW trails FCOS from scratch at 128 px (val): each part of the hypothesis changed alone.
    # DW's weights come from predictions that are noise at the start (FCOS's loss first, for 1 to 3
    # of the 6 epochs); its positive classification signal is weak (x0.25); its objectness learns
    # from its own predictions only (FCOS's centerness target instead)
    "synthetic128_dw_ablation": (
        Method("fcos", "FCOS", FCOS_CONFIG),
        Method("dw", "DW (released)", DW_CONFIG),
        *(Method(f"dw_fcoswarm{epochs}", f"DW after {epochs} epoch{'s' * (epochs > 1)} of FCOS's loss", DW_CONFIG,
                 (f"loss.fcos_warmup_epochs={epochs}",)) for epochs in (1, 2, 3)),
        Method("dw_pos1", "DW, positive terms x1 (not x0.25)", DW_CONFIG, ("loss.pos_reweight=1.0",)),
        Method("dw_ctr", "DW + FCOS's centerness target on the objectness", DW_CONFIG,
               ("loss.objectness_target=centerness",)),
        # the two that gained alone, together
        Method("dw_fcoswarm2_ctr", "DW after 2 epochs of FCOS's loss + the centerness target", DW_CONFIG,
               ("loss.fcos_warmup_epochs=2", "loss.objectness_target=centerness")),
        # DW's loss sits in medium objects (APm): each size's bag on the FPN levels FCOS gives it,
        # alone and with the chosen warm-up
        Method("dw_levels", "DW, bags on FCOS's levels for each size", DW_CONFIG, ("loss.bag_levels=fcos_ranges",)),
        Method("dw_fcoswarm3_levels", "DW after 3 epochs of FCOS's loss, bags on FCOS's levels", DW_CONFIG,
               ("loss.fcos_warmup_epochs=3", "loss.bag_levels=fcos_ranges")),
    ),
    # the SGD lr of each detector, swept on val around the config's 0.04 (per 16 images)
    "synthetic128_lr": lr_study(SYNTHETIC128, recipe_lr="0.04", lrs=SYNTHETIC128_LRS),
    # AP against training length: the 6 epochs of the benchmark against 12 and 24, and DW's
    # settings from the ablation at each length (the warm-up at half of each schedule)
    "synthetic128_length": (
        *length_study(SYNTHETIC128, (6, 12, 24), SYNTHETIC128_EPOCHS, every_seed=True),
        *length_curves(SYNTHETIC128_DW_SETTINGS, (6, 12, 24), SYNTHETIC128_EPOCHS, every_seed=True),
    ),
    # the paper's tables 1 and 6: hard (FCOS, ATSS) and soft (GFL, VFL, TOOD) assignment beside DW
    "assigners": (
        Method("fcos", "FCOS", ASSIGNER_CONFIGS["fcos"]),
        Method("atss", "ATSS", ASSIGNER_CONFIGS["atss"]),
        Method("gfl", "GFL", ASSIGNER_CONFIGS["gfl"]),
        Method("vfl", "VFL", ASSIGNER_CONFIGS["vfl"]),
        Method("tood", "TOOD", ASSIGNER_CONFIGS["tood"]),
        Method("dw", "DW (released)", ASSIGNER_CONFIGS["dw"]),
    ),
    # Does DW help once the detector is past its first steps? Both continue from the FCOS run's
    # weights for 3 more epochs; they differ only in the loss.
    "warmstart": (
        Method("fcos", "FCOS", FCOS_CONFIG),
        Method("warm_fcos", "FCOS, 3 more epochs", FCOS_CONFIG, WARM_START, False, init_from="fcos"),
        Method("warm_dw", "DW, 3 epochs from the FCOS weights", DW_CONFIG, WARM_START, False, init_from="fcos"),
    ),
    # shapes80: COCO's statistics and a pretrained backbone
    "shapes80": (
        Method("s80_fcos", "FCOS", SHAPES80_FCOS),
        Method("s80_dw", "DW (released)", SHAPES80_DW),
    ),
    "shapes80_length": length_study(SHAPES80, (2, 4, SHAPES80_EPOCHS, 12), SHAPES80_EPOCHS),
    # the assigners on shapes80, as the paper compares them (its tables 1 and 6)
    "shapes80_assigners": (
        Method("s80_fcos", "FCOS", SHAPES80_FCOS),
        *(Method(f"s80_{kind}", kind.upper(), f"configs/lab/{kind}_r10_shapes80.py") for kind in ("atss", "gfl", "vfl", "tood")),
        Method("s80_dw", "DW (released)", SHAPES80_DW),
    ),
    # patterns80: shapes80's statistics, classes a detector can read at every point of an object
    "patterns80": (
        Method("p80_fcos", "FCOS", PATTERNS80_FCOS),
        Method("p80_dw", "DW (released)", PATTERNS80_DW),
    ),
    # the same with AdamW, bf16 and 14 epochs: the recipe that fits 20 minutes on two cores
    "patterns80_adamw": adamw_study((4, 7, PATTERNS80_ADAMW_EPOCHS)),
    # the recipe's lr swept for FCOS and DW separately (on val)
    "patterns80_lr": lr_study((("p80a_fcos", "FCOS", PATTERNS80_ADAMW_FCOS),
                               ("p80a_dw", "DW (released)", PATTERNS80_ADAMW_DW))),
    # DW's loss pulls the box output 1.5-2x harder than FCOS's after 2 epochs of the AdamW recipe and
    # 3.5-5x at its end, the class logits 0.6-1x (lab.grad_parts): with one SGD lr its boxes train
    # faster. Each method with about the other's pull
    "patterns80_sgd_pull": (
        Method("p80_fcos", "FCOS", PATTERNS80_FCOS),
        Method("p80_dw", "DW (released)", PATTERNS80_DW),
        Method("p80_fcos_box3", "FCOS, box term x3", PATTERNS80_FCOS, ("train.loss_weights={'loss_box': 3.0}",),
               all_seeds=False),
        Method("p80_dw_loc033", "DW (released), box term x1/3", PATTERNS80_DW,
               ("train.loss_weights={'loss_loc': 0.333}",)),
    ),
    # the SGD recipe's lr swept for each method: DW's gradients are about 1.5x FCOS's (the recipe's
    # grad_norm records), so at one SGD lr DW takes larger steps; AdamW's steps do not scale with them
    "patterns80_sgd_lr": lr_study((("p80_fcos", "FCOS", PATTERNS80_FCOS), ("p80_dw", "DW (released)", PATTERNS80_DW)),
                                  recipe_lr="0.02", lrs=SGD_LRS),
    # an inference setting chosen on val (tools/rank_oracle.py --objectness-powers, seeds 0-2): DW's
    # trained runs ranked by sigmoid(cls) * sigmoid(objectness) ** 4
    "patterns80_inference": (
        *PATTERNS80_TRAINED,
        Method("p80a_dw_obj4", "DW (released), objectness^4 at inference", PATTERNS80_ADAMW_DW, ("train.ema=True",),
               trained_weights_of="p80a_dw_ema", inference=("model.objectness_power=4.0",)),
    ),
    # the recipe with the weight average on: its checkpoints hold both the average and the trained
    # weights (the trajectory is the recipe's own), so each run is a pair of its own
    "patterns80_ema": (
        *PATTERNS80_TRAINED,
        Method("p80a_fcos_ema", "FCOS, weight average", PATTERNS80_ADAMW_FCOS, ("train.ema=True",)),
        Method("p80a_dw_ema", "DW (released), weight average", PATTERNS80_ADAMW_DW, ("train.ema=True",)),
    ),
    # which part of the released DW makes its gain on patterns80 sit at AP50 and not at AP75: each
    # part changed alone, on val, the recipe's first seed (the plain recipe is the baseline)
    "patterns80_dw_ablation": (
        Method("p80a_fcos", "FCOS", PATTERNS80_ADAMW_FCOS),
        Method("p80a_dw", "DW (released)", PATTERNS80_ADAMW_DW),
        *(Method(f"p80a_dw_{name}", label, PATTERNS80_ADAMW_DW, overrides, all_seeds=False) for name, label, overrides in (
            ("refine", "DW + box refinement", ("model.refine=True",)),
            ("paper", "DW (the paper's equations)", ("loss.variant=paper",)),
            ("pos1", "DW, positive terms x1 (not x0.25)", ("loss.pos_reweight=1.0",)),
            ("muden5", "DW, per-GT normaliser exponent 5 (not 3)", ("loss.mu_den=5.0",)),
            ("sigma2", "DW, centre prior sigma 2 strides (not 1.11)", ("loss.sigma=2.0",)),
            ("sigma06", "DW, centre prior sigma 0.6 strides", ("loss.sigma=0.6",)),
            ("pneg", "DW, w_neg = P_neg only", ("loss.neg_weighting=pneg",)),
            ("beta2", "DW, consistency exponent beta 2 (not 5)", ("loss.beta=2.0",)),
        )),
    ),
    # DW's scores rank its boxes worse than FCOS's (tools/rank_oracle.py): the positive score pulled
    # towards the box's IoU instead of 1, against the recipe's runs of the same seeds
    "patterns80_dw_quality": (
        *PATTERNS80_TRAINED,
        Method("p80a_dw_iou", "DW, positive score target IoU", PATTERNS80_ADAMW_DW, ("loss.pos_cls_target=iou",)),
        # the IoU on the objectness alone: the class logit keeps DW's target 1
        Method("p80a_dw_objiou", "DW + the box's IoU as the objectness's target", PATTERNS80_ADAMW_DW,
               ("loss.objectness_target=iou",)),
    ),
    # the tree crowns' DW setting (the objectness's centerness target) on patterns80's recipe: does
    # DW keep its lead there with it? Paired with the recipe's runs of the same seeds
    "patterns80_dw_centerness": (
        *PATTERNS80_TRAINED,
        Method("p80a_dw_ctr", "DW + FCOS's centerness target on the objectness", PATTERNS80_ADAMW_DW,
               ("loss.objectness_target=centerness",)),
    ),
    # real aerial images of tree crowns, one class, val and test at places not trained on
    "treecrowns": (
        Method("tc_fcos", "FCOS", TREECROWNS_FCOS),
        Method("tc_dw", "DW (released)", TREECROWNS_DW),
    ),
    # the backbone pretrained on real images of other classes (ImageNet), as for COCO; needs
    # make imagenet-backbone
    "treecrowns_imagenet": (
        Method("tc_fcos_effl0", "FCOS, EfficientNet-Lite0 (ImageNet)", TREECROWNS_IMAGENET_FCOS),
        Method("tc_dw_effl0", "DW (released), EfficientNet-Lite0 (ImageNet)", TREECROWNS_IMAGENET_DW),
        Method("tc_fcos_effl0_d8", "FCOS, EfficientNet-Lite0 (ImageNet), 8 symmetries", TREECROWNS_IMAGENET_FCOS,
               TREECROWNS_D8, all_seeds=False),
        Method("tc_dw_effl0_d8", "DW (released), EfficientNet-Lite0 (ImageNet), 8 symmetries",
               TREECROWNS_IMAGENET_DW, TREECROWNS_D8, all_seeds=False),
        Method("tc_fcos_effl0_d8_e12", "FCOS, EfficientNet-Lite0 (ImageNet), 8 symmetries, 12 epochs",
               TREECROWNS_IMAGENET_FCOS, TREECROWNS_D8_E12, all_seeds=False),
        Method("tc_dw_effl0_d8_e12", "DW (released), EfficientNet-Lite0 (ImageNet), 8 symmetries, 12 epochs",
               TREECROWNS_IMAGENET_DW, TREECROWNS_D8_E12, all_seeds=False),
        # one class: the score's rank among a crown's candidates is all there is; re-scored by fit DW's
        # boxes reach 48 AP (tools/rank_oracle.py), so the positive score pulled towards the IoU
        Method("tc_dw_effl0_d8_e12_iou", "DW, positive score target IoU, EfficientNet-Lite0 (ImageNet), 8 symmetries, "
               "12 epochs", TREECROWNS_IMAGENET_DW, (*TREECROWNS_D8_E12, "loss.pos_cls_target=iou"), all_seeds=False),
        # 613 training crowns are learnt by heart (train AP 64, val 17 after 40 epochs): fewer weights
        # to fit, the backbone frozen whole, at each detector's lr
        *(Method(f"tc_{name}_effl0_d8_e12_lr{TREECROWNS_LRS[name]}_frozen4",
                 f"{label}, EfficientNet-Lite0 (ImageNet) frozen, 8 symmetries, 12 epochs, lr {TREECROWNS_LRS[name]}",
                 config, (*TREECROWNS_D8_E12, f"train.lr={TREECROWNS_LRS[name]}", "model.frozen_stages=4"),
                 all_seeds=False)
          for name, label, config in (("fcos", "FCOS", TREECROWNS_IMAGENET_FCOS),
                                      ("dw", "DW (released)", TREECROWNS_IMAGENET_DW))),
        # the same schedule with the left-right flip alone: what the symmetries add
        Method("tc_fcos_effl0_e12", "FCOS, EfficientNet-Lite0 (ImageNet), 12 epochs", TREECROWNS_IMAGENET_FCOS,
               TREECROWNS_E12, all_seeds=False),
        Method("tc_dw_effl0_e12", "DW (released), EfficientNet-Lite0 (ImageNet), 12 epochs", TREECROWNS_IMAGENET_DW,
               TREECROWNS_E12, all_seeds=False),
    ),
    # a whole place held out for val and test (its own val set: no pairing with the above); needs
    # python -m lab.make_treecrowns --layout sites --out data/treecrowns-sites
    "treecrowns_sites": (
        Method("tc_fcos_sites_e12", "FCOS, 12 epochs, a whole place held out", TREECROWNS_FCOS,
               ("data.root=data/treecrowns-sites", *schedule(12, 10 / 12))),
    ),
    # the lr of each detector on ImageNet's backbone, 8 symmetries, 12 epochs (val); FCOS still
    # gained at 1.6e-3, so the sweep goes on to 3.2e-3
    "treecrowns_imagenet_lr": lr_study((("tc_fcos_effl0_d8_e12", "FCOS", TREECROWNS_IMAGENET_FCOS),
                                        ("tc_dw_effl0_d8_e12", "DW (released)", TREECROWNS_IMAGENET_DW)),
                                       lrs=(*ADAMW_LRS, "3.2e-3"), overrides=TREECROWNS_D8_E12),
    # the paper's table 6 on the tree crowns as chosen on val: the six assigners, ATSS, GFL, VFL and
    # TOOD at FCOS's lr (not swept for each); FCOS and DW are the lr study's runs
    "treecrowns_assigners": tuple(
        Method(f"tc_{kind}_effl0_d8_e12_lr{_treecrowns_lr(kind)}", label, f"configs/lab/{kind}_effl0_treecrowns.py",
               _treecrowns_chosen(kind))
        for kind, label in (("fcos", "FCOS"), ("atss", "ATSS"), ("gfl", "GFL"), ("vfl", "VFL"), ("tood", "TOOD"),
                            ("dw", "DW (released)"))),
    "treecrowns_lr": lr_study((("tc_fcos", "FCOS", TREECROWNS_FCOS), ("tc_dw", "DW (released)", TREECROWNS_DW))),
    # the setting the ablation found (val, seed 0: 20.4 AP against the released DW's 18.4), over
    # every seed beside the two plain runs of the same seeds: val to confirm it, then the test split
    "treecrowns_dw_setting": (
        *TREECROWNS_CHOSEN,
        TREECROWNS_DW_CENTERNESS,
    ),
    # why the released DW trails FCOS on the tree crowns (val, the first seed): each part changed
    # alone on the chosen setting, and both detectors at twice the length; the two plain runs are
    # the lr study's. One class gives 171 (point, class) scores per object, 1400x fewer than on
    # COCO, so the negative term's strength comes first
    "treecrowns_dw_ablation": (
        *TREECROWNS_CHOSEN,
        *(Method(f"tc_dw_effl0_d8_e12_lr{_treecrowns_lr('dw')}_{name}", label, TREECROWNS_IMAGENET_DW,
                 (*_treecrowns_chosen("dw"), *overrides), all_seeds=False) for name, label, overrides in (
            ("negref", "DW, negative as on COCO (about x37 here)", NEG_AS_ON_COCO),
            ("neg4", "DW, negative x4", ("loss.neg_scale=4.0",)),
            ("pos1", "DW, positive terms x1 (not x0.25)", ("loss.pos_reweight=1.0",)),
            ("paper", "DW (the paper's equations)", ("loss.variant=paper",)),
            ("beta2", "DW, consistency exponent beta 2 (not 5)", ("loss.beta=2.0",)),
            ("sigma2", "DW, centre prior sigma 2 strides (not 1.11)", ("loss.sigma=2.0",)),
            ("pneg", "DW, w_neg = P_neg only", ("loss.neg_weighting=pneg",)),
            ("muden5", "DW, per-GT normaliser exponent 5 (not 3)", ("loss.mu_den=5.0",)),
            # its AP50 is lost to loose boxes ranked above fitted ones (tools/tide_errors.py)
            ("refine", "DW + box refinement", ("model.refine=True",)),
            # DW draws part of its AP from stride 16, which FCOS's size ranges leave alone for crowns
            # this small: each size on the levels FCOS gives it, alone and with the centerness target
            ("levels", "DW, bags on FCOS's levels for each size", ("loss.bag_levels=fcos_ranges",)),
            ("levels_ctr", "DW, bags on FCOS's levels + the centerness target",
             ("loss.bag_levels=fcos_ranges", "loss.objectness_target=centerness")),
            # DW's boxes ranked by their fit beat FCOS's (tools/rank_oracle.py), its scores do not
            # follow them: the objectness, a factor of every score, taught each box's IoU
            ("objiou", "DW + the box's IoU as the objectness's target", ("loss.objectness_target=iou",)),
            # beta 2, one of the two screens that gained besides it (sigma 2 the other), with the centerness target
            ("beta2_ctr", "DW, beta 2 + the centerness target", ("loss.beta=2.0", "loss.objectness_target=centerness")),
            # weights computed from predictions that are noise at the start: a third of the
            # schedule (TOOD's share) trained with FCOS's loss first
            ("fcoswarm4", "DW after 4 epochs of FCOS's loss", ("loss.fcos_warmup_epochs=4",)),
        )),
        TREECROWNS_DW_CENTERNESS,
        *(Method(f"tc_{name}_effl0_d8_e24_lr{TREECROWNS_LRS[name]}", f"{label}, 24 epochs", config,
                 (*TREECROWNS_D8, *schedule(24, 20 / 24), "eval.interval=4", f"train.lr={TREECROWNS_LRS[name]}"),
                 all_seeds=False)
          for name, label, config in (("fcos", "FCOS", TREECROWNS_IMAGENET_FCOS),
                                      ("dw", "DW (released)", TREECROWNS_IMAGENET_DW))),
    ),
    # the benchmark's design, chosen on val with FCOS: input scale, backbone, length
    "treecrowns_design": (
        *(Method(f"tc_fcos_e{epochs}" if epochs != 40 else "tc_fcos", "FCOS", TREECROWNS_FCOS,
                 schedule(epochs, 34 / 40) if epochs != 40 else (), curve="FCOS", x=epochs)
          for epochs in (12, 20, 40, 80)),
        Method("tc_fcos_x2", "FCOS, tiles upsampled x2", TREECROWNS_FCOS, TREECROWNS_X2),
        Method("tc_fcos_x2_e12", "FCOS, tiles upsampled x2, 12 epochs", TREECROWNS_FCOS,
               (*TREECROWNS_X2, *schedule(12, 10 / 12))),
        Method("tc_fcos_p80", "FCOS, patterns80 backbone", TREECROWNS_FCOS,
               ("model.backbone_weights=weights/resnet10_patterns80.pth",)),
    ),
    # the same recipe on shapes80, where DW trailed FCOS with SGD at every length
    "shapes80_adamw": (
        Method("s80a_fcos", "FCOS", SHAPES80_FCOS, ADAMW_RECIPE, all_seeds=False),
        Method("s80a_dw", "DW (released)", SHAPES80_DW, ADAMW_RECIPE, all_seeds=False),
    ),
    "patterns80_assigners": (
        Method("p80_fcos", "FCOS", PATTERNS80_FCOS),
        *(Method(f"p80_{kind}", kind.upper(), f"configs/lab/{kind}_r10_patterns80.py") for kind in ("atss", "gfl", "vfl", "tood")),
        Method("p80_dw", "DW (released)", PATTERNS80_DW),
    ),
    # the paper's table 6 on the AdamW recipe: the other four assigners on the recipe's settings,
    # beside its FCOS and DW runs of the same seeds (trained with train.ema, their trained weights
    # evaluated: the plain recipe's weights, since the average never feeds back). TOOD's ATSS
    # warm-up keeps its third of the schedule (5 of 14 epochs)
    "patterns80_adamw_assigners": (
        *PATTERNS80_TRAINED,
        *(Method(f"p80a_{kind}", kind.upper(), f"configs/lab/{kind}_r10_patterns80.py",
                 (*ADAMW_RECIPE, *(("loss.warmup_epochs=5",) if kind == "tood" else ())))
          for kind in ("atss", "gfl", "vfl", "tood")),
    ),
    # AP against (point, class) scores per object: the same images and backbone, the annotations
    # naming 80 classes (pattern x hue), 8 (the pattern) or 1 ("object")
    "patterns80_classes": class_count_study(),
    # the same with 4-6 objects per image instead of 1-2 (the images' sizes and classes as they were)
    "patterns80_objects": objects_study(),
    # background pressure: DW's negative term scaled up
    "shapes80_neg": (
        Method("s80_dw", "DW (released)", SHAPES80_DW),
        Method("s80_dw_neg10", "DW, negative x10", SHAPES80_DW, ("loss.neg_scale=10.0",)),
        Method("s80_dw_neg100", "DW, negative x100", SHAPES80_DW, ("loss.neg_scale=100.0",)),
    ),
    "patterns80_neg": (
        Method("p80_dw", "DW (released)", PATTERNS80_DW),
        Method("p80_dw_neg10", "DW, negative x10", PATTERNS80_DW, ("loss.neg_scale=10.0",)),
        Method("p80_dw_neg100", "DW, negative x100", PATTERNS80_DW, ("loss.neg_scale=100.0",)),
        Method("p80_dw_negref", "DW, negative as on COCO (square root)", PATTERNS80_DW, NEG_AS_ON_COCO),
    ),
}

