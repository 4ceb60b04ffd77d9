"""The one place where the engine meets the detector, the losses and the datasets: each builder
takes the whole resolved config (see configs/_base_/*.py for the keys)."""
from __future__ import annotations

import logging
import os
import urllib.error
from collections.abc import Sequence
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from dwdet.config import Config, apply_overrides, load_config
from dwdet.engine.checkpoint import CheckpointError, load_checkpoint
from dwdet.engine.compat import migrate_config
from dwdet.engine.evaluation import CocoEvaluator
from dwdet.utils.dist import get_rank, get_world_size

__all__ = ["apply_input_spec", "annotation_file", "build_dataset", "build_loss", "build_model", "build_train_data",
           "build_val_data", "init_weights", "input_spec", "load_detector", "load_run", "read_categories",
           "resolve_num_classes"]

logger = logging.getLogger(__name__)


def build_loss(cfg: Config) -> nn.Module:
    """``cfg.loss.type`` picks the loss (a key of ``dwdet.losses.LOSSES``: fcos, atss, gfl, vfl,
    tood, dw); its other keys are the loss's arguments."""
    from dwdet.losses import LOSSES
    kwargs = cfg.loss.to_dict()
    kind = kwargs.pop("type")
    if kind not in LOSSES:
        raise ValueError(f"config key loss.type must be one of {sorted(LOSSES)}, got {kind!r}")
    try:
        return LOSSES[kind](cfg.model.num_classes, **kwargs)
    except (TypeError, ValueError) as err:  # an unknown key or a bad value: say it is the loss config's
        raise ValueError(f"config key loss (type {kind!r}): {err}") from None


def build_model(cfg: Config) -> nn.Module:
    """The detector described by ``cfg.model``: ``type`` "fcos" is ours, with the loss of
    ``cfg.loss``; "torchvision_fcos" is torchvision's FCOS (its own loss; ``cfg.loss`` is unused)
    on the same backbone and inputs, for comparisons."""
    from dwdet.models import build_fcos, build_torchvision_fcos
    cfg = resolve_num_classes(cfg)
    kwargs = migrate_config(cfg.to_dict())["model"]
    kind, num_classes = kwargs.pop("type"), kwargs.pop("num_classes")
    if kind not in ("fcos", "torchvision_fcos"):
        raise ValueError(f"config key model.type must be 'fcos' or 'torchvision_fcos', got {kind!r}")
    if kind == "torchvision_fcos" and kwargs.pop("refine"):
        raise ValueError("config key model.refine=True: torchvision's FCOS has no box refinement")
    if kind == "torchvision_fcos" and kwargs.pop("objectness_power", 1.0) != 1.0:
        raise ValueError("config key model.objectness_power: torchvision's FCOS scores its boxes its own way; leave it 1")
    try:
        if kind == "fcos":
            return build_fcos(num_classes, build_loss(cfg), **kwargs)
        return build_torchvision_fcos(num_classes, **kwargs)
    except urllib.error.URLError as err:  # torchvision's weights download, e.g. offline
        raise RuntimeError(
            f"config key model.backbone_weights={kwargs.get('backbone_weights')!r}: downloading these torchvision "
            f"weights failed ({err.reason}). Offline, put the file into {torch.hub.get_dir()}/checkpoints, or set "
            f"model.backbone_weights to a local .pth (a backbone file or a dwdet checkpoint) or to None") from None


def init_weights(model: nn.Module, path: str, num_classes: int) -> None:
    """Load the model weights of checkpoint ``path`` (``train.init_from``) into ``model``.

    Everything must fit except the classification layer, whose first dimension is the number of
    classes: when that number differs from the checkpoint's, the layer keeps its fresh
    initialisation (and the log says so), so that a detector fine-tunes to another set of classes."""
    ckpt = load_checkpoint(path)
    source = ckpt["model"]
    source_classes = len(ckpt["categories"]) if ckpt.get("categories") else \
        (ckpt.get("config") or {}).get("model", {}).get("num_classes")
    target = model.state_dict()
    missing = sorted(target.keys() - source.keys())
    unexpected = sorted(source.keys() - target.keys())
    fresh, wrong = [], []
    for name in sorted(target.keys() & source.keys()):
        have, get = target[name].shape, source[name].shape
        if have == get:
            continue
        if source_classes != num_classes and have[:1] == (num_classes,) and get[:1] == (source_classes,) \
                and have[1:] == get[1:]:
            fresh.append(name)
        else:
            wrong.append(f"{name}: {tuple(get)} in the checkpoint, {tuple(have)} here")
    if missing or unexpected or wrong:
        problems = ([f"missing {', '.join(missing[:5])}"] if missing else []) + \
            ([f"unexpected {', '.join(unexpected[:5])}"] if unexpected else []) + wrong[:5]
        raise ValueError(f"config key train.init_from: {path} does not fit this model: {'; '.join(problems)}")
    model.load_state_dict({name: value for name, value in source.items() if name not in fresh}, strict=False)
    if fresh:
        logger.info("train.init_from: the classification layer (%s) starts afresh: %s has %s classes, this "
                    "run %d; every other weight is loaded", ", ".join(fresh), path, source_classes, num_classes)
    else:
        logger.info("train.init_from: all weights loaded from %s", path)


def split_files(cfg: Config, split: str) -> tuple[str, str]:
    """(image folder, annotation file) of a split, from the data source that ``cfg.data.type`` names
    (``dwdet.data.sources``: "coco", or one registered by a module of ``cfg.custom_imports``)."""
    from dwdet.data.sources import data_source
    images, annotations = data_source(cfg.data.type, cfg.get("custom_imports"))(cfg.data, split)
    return str(images), str(annotations)


def annotation_file(cfg: Config, split: str) -> str:
    """The COCO annotation file of ``split`` ("train" or "val")."""
    return split_files(cfg, split)[1]


def read_categories(ann_file: str) -> list[dict[str, Any]]:
    """The categories (``{"id", "name"}``) of a COCO annotation file, sorted by id: label ``k`` is
    the ``k``-th. Reads only the JSON, not the images."""
    from dwdet.data import load_coco
    coco = load_coco(ann_file)
    return [{"id": int(c["id"]), "name": str(c["name"])} for c in coco.loadCats(sorted(coco.cats))]


def resolve_num_classes(cfg: Config, categories: Sequence[dict[str, Any]] | None = None,
                        source: str | None = None) -> Config:
    """``cfg`` with ``model.num_classes`` = the number of ``categories`` (those of ``source``: a
    checkpoint's, the training set's). Without ``categories``: an explicit value as it is, else the
    categories of the training annotation file. An explicit value that disagrees with the
    categories is an error naming both. The one place that sets ``model.num_classes``."""
    explicit = cfg.model.num_classes
    if categories is None:
        if explicit is not None:
            return cfg
        source = annotation_file(cfg, "train")
        categories = read_categories(source)
    if explicit is not None and explicit != len(categories):
        names = ", ".join(c["name"] for c in categories[:10]) + (", ..." if len(categories) > 10 else "")
        raise ValueError(f"config key model.num_classes is {explicit}, but {source} has {len(categories)} "
                         f"categories ({names}); set model.num_classes={len(categories)}, or leave the key out of "
                         f"the config to take the number from the file")
    return cfg.merge({"model": {"num_classes": len(categories)}})


def build_dataset(cfg: Config, split: str, training: bool | None = None) -> Any:
    """``cfg.data.type``: "coco" (``root`` + ``{split}_images`` / ``{split}_ann``) or a registered data
    source (``dwdet.data.sources``, e.g. the lab's "synthetic"). ``training`` (by default: the split
    is "train"): images are flipped left to right with probability ``flip``, top to bottom with
    ``vflip`` and transposed with ``transpose``, and images without boxes are skipped; otherwise
    every image is given as it is, as an evaluation of the split needs it."""
    from dwdet.data import CocoDetection, RandomFlips
    data = cfg.data
    images, annotations = split_files(cfg, split)
    training = split == "train" if training is None else training
    probabilities = (data.flip, data.vflip, data.transpose)
    flip = RandomFlips(*probabilities) if training and any(p > 0 for p in probabilities) else None
    return CocoDetection(images, annotations, flip, filter_empty=training, on_bad_image=data.on_bad_image,
                         on_unknown_category=data.on_unknown_category)


def build_train_data(cfg: Config) -> tuple[Any, Any]:
    """(training dataset, this rank's aspect-ratio grouped batch sampler with ``set_epoch``).

    Every sample carries its own seed for the random flip, so an epoch is the same after a resume
    whatever the number of workers."""
    from dwdet.data import GroupedBatchSampler, SeededDataset, aspect_ratio_groups
    dataset = build_dataset(cfg, "train")
    sampler = DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=True,
                                 seed=cfg.train.seed)
    batch_sampler = GroupedBatchSampler(sampler, aspect_ratio_groups(dataset.image_sizes), cfg.train.batch_size)
    return SeededDataset(dataset), batch_sampler


def build_val_data(cfg: Config) -> tuple[Any, CocoEvaluator]:
    """(validation dataset, its COCO evaluator)."""
    dataset = build_dataset(cfg, "val")
    return dataset, CocoEvaluator(dataset.coco, dataset.cat_ids)


def input_spec(model: nn.Module) -> dict[str, Any] | None:
    """What the model expects of its input images, for the checkpoint: RGB in [0, 1], normalised
    inside the model with ``mean`` and ``std`` (``None`` for a model without that transform)."""
    transform = getattr(model, "transform", None)
    if transform is None or not hasattr(transform, "image_mean"):
        return None
    return {"color": "RGB", "range": [0.0, 1.0], "mean": [float(x) for x in transform.image_mean],
            "std": [float(x) for x in transform.image_std]}


def apply_input_spec(model: nn.Module, spec: dict[str, Any] | None, source: str) -> None:
    """Make ``model`` normalise its inputs as the checkpoint ``source`` says it was trained to."""
    if spec is None:
        return
    if spec.get("color") != "RGB" or list(spec.get("range", ())) != [0.0, 1.0]:
        raise CheckpointError(f"{source} expects {spec.get('color')} images in {spec.get('range')}; this dwdet "
                              f"feeds RGB in [0, 1]")
    if getattr(model, "transform", None) is None:
        raise CheckpointError(f"{source} carries an input normalisation but its model has no transform to apply it")
    model.transform.image_mean = list(spec["mean"])
    model.transform.image_std = list(spec["std"])


def load_detector(checkpoint: str | os.PathLike, overrides: Sequence[str] = (),
                  categories: Sequence[dict[str, Any]] | None = None, cfg: Config | None = None,
                  trained_weights: bool = False, changes: Mapping[str, Any] | None = None
                  ) -> tuple[nn.Module, Config, list[dict[str, Any]]]:
    """(model in eval mode on the CPU, its config, its categories in label order) from a checkpoint
    alone: the resolved config, class names and input normalisation it carries.

    ``cfg`` replaces the checkpoint's config (e.g. the one tools/test.py is given), ``overrides``
    change it (command-line strings, e.g. ``model.score_thresh=0.1``) and then ``changes`` (nested
    dicts, :meth:`Config.merge`); ``categories`` names the classes of a checkpoint
    written before checkpoints carried them. The backbone's pretrained weights are not loaded: the
    checkpoint's weights replace them. ``trained_weights`` loads the trained weights of a run with
    ``train.ema`` instead of their average (which is what the checkpoint's ``model`` holds)."""
    source = os.fspath(checkpoint)
    return detector_from_checkpoint(load_checkpoint(source), source, overrides, categories, cfg, trained_weights,
                                    changes)


def detector_from_checkpoint(ckpt: Mapping[str, Any], source: str, overrides: Sequence[str] = (),
                             categories: Sequence[dict[str, Any]] | None = None, cfg: Config | None = None,
                             trained_weights: bool = False, changes: Mapping[str, Any] | None = None
                             ) -> tuple[nn.Module, Config, list[dict[str, Any]]]:
    """:func:`load_detector` of a checkpoint already read from ``source``."""
    if trained_weights and "train_model" not in ckpt:
        raise CheckpointError(f"{source} holds no weight average beside its trained weights (it was trained "
                              f"without train.ema, or exported): load it without asking for the trained weights")
    categories = ckpt.get("categories") or categories
    if categories is None:
        raise CheckpointError(
            f"{source} does not carry its class names (checkpoint version {ckpt['version']}, written by a dwdet "
            f"before 0.2); name them with the annotation file it was trained on (tools/infer.py --categories "
            f"ANNOTATIONS.json)")
    cfg = apply_overrides(ckpt["config"] if cfg is None else migrate_config(cfg.to_dict()), overrides)
    if changes:
        cfg = cfg.merge(changes)
    if "backbone_weights" in cfg.model:
        cfg = cfg.merge({"model": {"backbone_weights": None}})
    cfg = resolve_num_classes(cfg, categories, source)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["train_model" if trained_weights else "model"])
    except RuntimeError as err:  # missing, unexpected or differently shaped parameters
        raise CheckpointError(f"the weights of {source} do not fit the model its config describes: {err}") from None
    apply_input_spec(model, ckpt.get("input"), source)
    return model.eval(), cfg, list(categories)


def load_run(run: str | os.PathLike, split: str, checkpoint: str = "last.pth", trained_weights: bool = False
             ) -> tuple[nn.Module, Config, Any]:
    """(our detector in eval mode, its config, the dataset of ``split``, its images as they are: no
    flips, every image, whatever the split) of a finished run folder of
    tools/train.py (its config.json and ``checkpoint``), for the tools that study trained runs.
    ``trained_weights``: the trained weights where the checkpoint holds an average beside them (a
    run trained with ``train.ema``); a run without an average has only its trained weights, so a
    study can ask the same of every run."""
    folder = os.fspath(run)
    for name in ("config.json", checkpoint):
        if not os.path.isfile(os.path.join(folder, name)):
            raise CheckpointError(f"{folder} is not a finished run folder: {name} is missing")
    cfg = load_config(os.path.join(folder, "config.json"))
    if cfg.model.get("type", "fcos") != "fcos":
        raise CheckpointError(f"{folder}: model.type={cfg.model.type!r}; only our detector (model.type='fcos') "
                              "can be studied")
    dataset = build_dataset(cfg, split, training=False)
    source = os.path.join(folder, checkpoint)
    ckpt = load_checkpoint(source)
    model, cfg, _ = detector_from_checkpoint(ckpt, source, cfg=cfg, categories=getattr(dataset, "categories", None),
                                             trained_weights=trained_weights and "train_model" in ckpt)
    return model, cfg, dataset
