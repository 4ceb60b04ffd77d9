"""A synthetic COCO-format detection benchmark of shapes, generated deterministically from a seed.

Eight shape classes (filled and outlined rectangles and ellipses, triangles, crosses, stars,
diamonds) over textured backgrounds (gradients, stripes, smooth blotches, plus grain), among
unannotated clutter (irregular blobs under the objects, strokes under and over them). With
``colours = 0`` objects take random colours, so that colour never tells the class. With
``colours = k`` the class is shape x hue: k hues evenly spaced on the colour wheel give 8k classes
("red star", "azure ring", ...), objects are saturated colours of their hue and the backgrounds are
desaturated, so that the hue can be read (``colours=10``: 80 classes, as many as COCO's). With
``patterns = True`` the class is fill pattern x hue instead ("red checked", "azure dotted", ...):
eight patterns (solid, stripes in four directions, checks, dots, a grid) in a bright and a dark
shade of the hue, on filled shapes drawn at random, so that the class can be read at every point
of the object, as a texture, rather than only from its outline. ``labels`` names what the
annotations tell of each object: its class (default), only its kind (shape or pattern), only its
hue, or just "object"; the images stay the same, so that the number of classes, and with it the
(point, class) scores per object, varies alone. Object
sizes are log-uniform, so the COCO small (< 32²), medium and large ranges are all populated.
Objects are drawn in order, later ones over earlier ones; an object hidden by more than
``max_occlusion`` of its pixels is left out of the image, and every annotated box is the full
extent of its object. ``area`` is the box area.

Importing this module registers the data source "synthetic" with dwdet (``data.type="synthetic"``,
generated under ``data.root`` from ``data.seed`` and ``data.params``): configs ask for it with
``custom_imports = ["lab.synthetic"]``.

Every image draws from its own ``numpy`` Generator seeded by (seed, split, index), and files are
written without timestamps, so the same configuration gives byte-identical files. The test split
(``num_test`` images, none by default) draws from its own seed, ``test_seed``: it can be added to a
folder generated without it, and redrawn, leaving the train and val files as they are.

Layout under the output folder::

    manifest.json                      generator version and configuration
    train/000001.jpg ...               images (JPEG or PNG)
    val/000001.jpg ...
    test/000001.jpg ...                (with num_test > 0)
    annotations/instances_train.json   COCO detection annotations
    annotations/instances_val.json
    annotations/instances_test.json
"""
from __future__ import annotations

import colorsys
import json
import math
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from dwdet.data.sources import register_data_source

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
# The random stream of each split (its place in every image's seed); 2 and 3 are the backbone
# pretraining crops' (lab/pretrain.py).
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 4}
# The fields of the test split: a folder generated without them is the same folder as before.
TEST_FIELDS = ("num_test", "test_seed")
SHAPE_CLASSES = ("rectangle", "frame", "ellipse", "ring", "triangle", "cross", "star", "diamond")
PATTERNS = ("solid", "h-striped", "v-striped", "slashed", "backslashed", "checked", "dotted", "gridded")
# With patterns the shape tells nothing; only filled shapes, so that the pattern shows everywhere.
PATTERN_SHAPES = ("rectangle", "ellipse", "triangle", "diamond")
# Names of the hues every 30 degrees; a hue class is named after the nearest one.
HUE_NAMES = ("red", "orange", "yellow", "chartreuse", "green", "spring", "cyan", "azure", "blue", "violet",
             "magenta", "rose")
MAX_COLOURS = len(HUE_NAMES)
LABELS = ("class", "kind", "hue", "object")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated files."""

    seed: int = 0
    num_train: int = 400
    num_val: int = 100
    image_size: int = 320  # long side of every image, pixels
    aspect_ratios: tuple[float, ...] = (0.75, 1.0, 4 / 3)  # width / height, one drawn per image
    min_objects: int = 3  # objects placed per image before occlusion drops some
    max_objects: int = 12
    min_object_size: int = 8  # square root of the box area, pixels
    max_object_fraction: float = 0.6  # largest square root of the box area / short image side
    max_occlusion: float = 0.6  # objects with a larger hidden fraction of their pixels are left out
    max_blobs: int = 4  # clutter per image
    max_strokes: int = 8
    noise_std: float = 6.0  # per-pixel grain, in 0..255 units
    image_format: str = "jpg"  # "jpg" or "png"
    jpeg_quality: int = 90
    colours: int = 0  # 0: any colour, 8 shape classes; k: shape x k hues, 8k classes
    patterns: bool = False  # with colours = k: the classes are fill pattern x hue (8k), shapes random
    labels: str = "class"  # what the annotations name: "class", its "kind" (shape or pattern), "hue", or "object"
    num_test: int = 0  # images of the test split, drawn from test_seed rather than seed
    test_seed: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "aspect_ratios", tuple(float(a) for a in self.aspect_ratios))
        checks = [
            (min(self.num_train, self.num_val, self.num_test) >= 0, "num_train, num_val and num_test must be >= 0"),
            (self.image_size >= 32, "image_size must be >= 32"),
            (len(self.aspect_ratios) > 0 and all(0.25 <= a <= 4 for a in self.aspect_ratios),
             "aspect_ratios must be a non-empty list of width/height ratios in [0.25, 4]"),
            (0 <= self.min_objects <= self.max_objects, "need 0 <= min_objects <= max_objects"),
            (4 <= self.min_object_size, "min_object_size must be >= 4"),
            (0 < self.max_object_fraction <= 1, "max_object_fraction must be in (0, 1]"),
            (0 <= self.max_occlusion < 1, "max_occlusion must be in [0, 1)"),
            (self.max_blobs >= 0 and self.max_strokes >= 0, "max_blobs and max_strokes must be >= 0"),
            (self.noise_std >= 0, "noise_std must be >= 0"),
            (self.image_format in ("jpg", "png"), "image_format must be 'jpg' or 'png'"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in [1, 100]"),
            (self.colours == 0 or 2 <= self.colours <= MAX_COLOURS,
             f"colours must be 0 (any colour) or a number of hues in [2, {MAX_COLOURS}]"),
            (not self.patterns or self.colours > 0, "patterns need colours > 0: the class is pattern x hue"),
            (self.labels in LABELS, f"labels must be one of {LABELS}"),
            (self.labels != "hue" or self.colours > 0, "labels='hue' needs colours > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig: {message} (got {self})")
        short_side = self.image_size * min(min(a, 1 / a) for a in self.aspect_ratios)
        if self.min_object_size > self.max_object_fraction * short_side:
            raise ValueError(f"SyntheticConfig: min_object_size {self.min_object_size} exceeds the largest "
                             f"object size {self.max_object_fraction} * {short_side:.0f} of the smallest side")


def class_names(colours: int = 0, patterns: bool = False) -> tuple[str, ...]:
    """The category names of a dataset with ``colours`` hue classes, in label order: shape-major
    (pattern-major with ``patterns``), so that label = kind * colours + hue."""
    if colours == 0:
        return SHAPE_CLASSES
    kinds = PATTERNS if patterns else SHAPE_CLASSES
    return tuple(f"{_hue_name(j, colours)} {kind}" for kind in kinds for j in range(colours))


def _hue_name(hue_class: int, colours: int) -> str:
    return HUE_NAMES[round(12 * hue_class / colours) % 12]


def num_classes(config: SyntheticConfig) -> int:
    """The number of classes the images are drawn from (whatever the annotations name)."""
    return len(class_names(config.colours, config.patterns))


def annotated_names(config: SyntheticConfig) -> tuple[str, ...]:
    """The category names the annotations use, in label order (see ``SyntheticConfig.labels``)."""
    if config.labels == "object":
        return ("object",)
    if config.labels == "hue":
        return tuple(_hue_name(j, config.colours) for j in range(config.colours))
    if config.labels == "kind":
        return PATTERNS if config.patterns else SHAPE_CLASSES
    return class_names(config.colours, config.patterns)


def annotated_label(config: SyntheticConfig, label: int) -> int:
    """The annotation's label of an object of class ``label``: fewer labels for the same images,
    so that the (point, class) scores per object can vary with nothing else."""
    colours = max(config.colours, 1)
    return {"class": label, "kind": label // colours, "hue": label % colours, "object": 0}[config.labels]


class SplitPaths(NamedTuple):
    images: Path  # folder of the image files
    annotations: Path  # COCO JSON


def split_paths(root: str | os.PathLike, split: str) -> SplitPaths:
    """Where the images and annotations of ``split`` ("train", "val" or "test") live under ``root``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    return SplitPaths(root / split, root / "annotations" / f"instances_{split}.json")


def ensure_synthetic(root: str | os.PathLike, seed: int = 0, **params) -> dict[str, SplitPaths]:
    """Generate the dataset under ``root`` unless a manifest there records this exact configuration.

    ``params`` are :class:`SyntheticConfig` fields. A folder generated with other parameters is
    replaced; one that differs only in its test split gets the requested test split, its train and
    val files untouched; a non-empty folder without a manifest is never touched. Generation happens
    in a temporary sibling folder that is renamed into place, so an interrupted run leaves nothing
    behind and concurrent callers end up with one complete copy. Returns the paths of the splits
    (the test split's only with ``num_test`` > 0).
    """
    config = SyntheticConfig(seed=seed, **params)
    root = Path(root)
    splits = SPLITS if config.num_test else SPLITS[:2]
    found = _read_manifest(root)
    if found is None and root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and has no {MANIFEST}: it is not a synthetic "
                              f"dataset folder, refusing to overwrite it")
    if _manifest_matches(root, config):
        return {split: split_paths(root, split) for split in splits}
    same_train_val = found is not None and found.get("config") == _manifest(config)["config"]
    staging = root.with_name(f".{root.name}.staging-{secrets.token_hex(4)}")
    try:
        generate_synthetic(staging, config, splits=("test",) if same_train_val else splits)
        if _manifest_matches(root, config):  # another process finished first: keep its copy
            return {split: split_paths(root, split) for split in splits}
        if same_train_val:
            _move_test_split(staging, root)
        else:
            if root.exists():  # generated with other parameters
                stale = root.with_name(f".{root.name}.stale-{secrets.token_hex(4)}")
                root.rename(stale)
                shutil.rmtree(stale)
            staging.rename(root)
    except OSError:
        if not _manifest_matches(root, config):  # not merely lost a race to another process
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {split: split_paths(root, split) for split in splits}


@register_data_source("synthetic")
def synthetic_split(data, split: str) -> SplitPaths:
    """``data.type="synthetic"``: the split of the set under ``data.root``, generated from ``data.seed``
    and ``data.params`` (:class:`SyntheticConfig` fields) if it is not there yet."""
    return ensure_synthetic(data["root"], seed=data["seed"], **dict(data["params"]))[split]


def _move_test_split(staging: Path, root: Path) -> None:
    """Put the test split generated in ``staging`` into ``root`` (replacing its test split, if any),
    the manifest last, so that a folder whose manifest names a test split holds it."""
    images, annotations = split_paths(root, "test")
    if images.exists():
        shutil.rmtree(images)
    staging_images, staging_annotations = split_paths(staging, "test")
    staging_images.rename(images)
    os.replace(staging_annotations, annotations)
    os.replace(staging / MANIFEST, root / MANIFEST)


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _manifest_matches(root: Path, config: SyntheticConfig) -> bool:
    """Whether ``root`` holds the files of ``config``; a test split there that ``config`` does not
    ask for is no mismatch."""
    found, wanted = _read_manifest(root), _manifest(config)
    if found is None or not config.num_test:
        found = found and {k: v for k, v in found.items() if k != "test"}
    return found == wanted


def _manifest(config: SyntheticConfig) -> dict:
    # Through JSON so that tuples compare equal to the lists read back. The test split's fields stay
    # out of "config", so that the manifests of folders generated before it existed still match.
    fields = asdict(config)
    test = {k: fields.pop(k) for k in TEST_FIELDS}
    # the module that first wrote it, kept so that the folders generated since still match
    manifest = {"generator": "dwdet.data.synthetic", "version": GENERATOR_VERSION, "config": fields}
    if config.num_test:
        manifest["test"] = test
    return json.loads(json.dumps(manifest))


def generate_synthetic(out: str | os.PathLike, config: SyntheticConfig, splits: tuple[str, ...] | None = None) -> None:
    """Write the dataset described by ``config`` into ``out`` (created if needed), manifest last:
    ``splits`` (default: train, val, and test if ``num_test`` > 0)."""
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"}
                  for k, name in enumerate(annotated_names(config))]
    counts = {"train": config.num_train, "val": config.num_val, "test": config.num_test}
    for split in splits or (SPLITS if config.num_test else SPLITS[:2]):
        seed = config.test_seed if split == "test" else config.seed
        image_dir, ann_file = split_paths(out, split)
        image_dir.mkdir(exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, counts[split] + 1):
            rng = np.random.default_rng([seed, SPLIT_STREAMS[split], image_id])
            pixels, objects = render_image(rng, config)
            file_name = f"{image_id:06d}.{config.image_format}"
            _save(pixels, image_dir / file_name, config)
            height, width = pixels.shape[:2]
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for label, (x, y, w, h) in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": annotated_label(config, label) + 1, "bbox": [x, y, w, h],
                                    "area": w * h, "iscrowd": 0})
        coco = {"info": {"description": "dwdet synthetic shapes", "version": GENERATOR_VERSION,
                         "seed": seed, "split": split},
                "licenses": [], "images": images, "annotations": annotations, "categories": categories}
        ann_file.write_text(json.dumps(coco))
    (out / MANIFEST).write_text(json.dumps(_manifest(config), indent=2))


def _save(pixels: np.ndarray, path: Path, config: SyntheticConfig) -> None:
    image = Image.fromarray(pixels)
    if config.image_format == "jpg":
        image.save(path, format="JPEG", quality=config.jpeg_quality)
    else:
        image.save(path, format="PNG")


def render_image(rng: np.random.Generator, config: SyntheticConfig) -> tuple[np.ndarray, list]:
    """One image (H, W, 3) uint8 and its objects as ``(label, [x, y, w, h])`` with integer boxes."""
    aspect = config.aspect_ratios[rng.integers(len(config.aspect_ratios))]
    long_side = config.image_size
    width, height = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)

    background = _background(rng, height, width, muted=config.colours > 0)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(config.max_blobs + 1)):
        draw.polygon(_blob(rng, height, width), fill=_colour(rng))
    num_strokes = rng.integers(config.max_strokes + 1)
    under = rng.integers(num_strokes + 1)  # strokes drawn before the objects, the rest after
    for _ in range(under):
        _stroke(rng, draw, height, width)

    placed = [_place_object(rng, config, height, width) for _ in range(rng.integers(config.min_objects,
                                                                                 config.max_objects + 1))]
    kept = _visible_enough(placed, height, width, config.max_occlusion)
    objects = []
    for label, (x, y), mask in kept:
        if config.colours:
            colour = _hue_colour(rng, label % config.colours, config.colours)
        else:
            colour = _contrasting_colour(rng, background[y:y + mask.shape[0], x:x + mask.shape[1]][mask].mean(axis=0))
        if config.patterns:
            colour = Image.fromarray(_pattern_fill(PATTERNS[label // config.colours], mask.shape, colour, rng))
        canvas.paste(colour, (x, y, x + mask.shape[1], y + mask.shape[0]), Image.fromarray(mask))
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        objects.append((label, [x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1),
                                int(rows[-1] - rows[0] + 1)]))
    for _ in range(num_strokes - under):
        _stroke(rng, draw, height, width)

    pixels = np.array(canvas, dtype=np.float32)
    if config.noise_std > 0:
        pixels += config.noise_std * rng.standard_normal(pixels.shape, dtype=np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), objects


def render_crop(rng: np.random.Generator, config: SyntheticConfig, size: int) -> tuple[np.ndarray, int]:
    """A ``size`` x ``size`` image of one object for backbone pretraining, drawn like the images of
    ``config`` (backgrounds, clutter, colours, grain), and its class; with probability 1 / (classes
    + 1) it holds no object and the class is the number of classes ("background")."""
    classes = num_classes(config)
    background = rng.integers(classes + 1) == classes
    crop = replace(config, image_size=size, aspect_ratios=(1.0,), min_objects=int(not background),
                   max_objects=int(not background), min_object_size=max(4, size // 5), max_object_fraction=0.95,
                   max_blobs=min(config.max_blobs, 2), max_strokes=min(config.max_strokes, 2))
    pixels, objects = render_image(rng, crop)
    return pixels, objects[0][0] if objects else classes


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, min_distance: float = 80.0):
    """A random colour, redrawn a few times if it is too close to the background it covers."""
    for _ in range(8):
        colour = _colour(rng)
        if np.linalg.norm(np.asarray(colour) - against) >= min_distance:
            break
    return colour


def _hue_colour(rng: np.random.Generator, hue_class: int, colours: int) -> tuple[int, int, int]:
    """A saturated colour of hue class ``hue_class`` of ``colours``: the hue within +-0.15 of the gap
    to the next class, saturation 0.75-1, value 0.65-1."""
    hue = (hue_class + rng.uniform(-0.15, 0.15)) / colours % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.65, 1.0))
    return tuple(int(round(255 * c)) for c in rgb)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A greyish colour (saturation <= 0.25): backgrounds that leave the objects' hue readable."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.25), rng.uniform(0.1, 0.95))
    return 255 * np.asarray(rgb, dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int, muted: bool = False) -> np.ndarray:
    """(H, W, 3) float texture: a gradient, stripes or smooth blotches between two random colours
    (greyish ones if ``muted``)."""
    if muted:
        a, b = _muted_colour(rng), _muted_colour(rng)
    else:
        a, b = (rng.integers(0, 256, size=3).astype(np.float32) for _ in range(2))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    along = xs * math.cos(theta) + ys * math.sin(theta)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient
        t = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
    elif kind == 1:  # soft stripes
        t = 0.5 + 0.5 * np.sin(2 * math.pi * along / rng.uniform(6, 40))
    else:  # smooth blotches: a coarse random grid upsampled
        grid = Image.fromarray((rng.random((rng.integers(2, 9), rng.integers(2, 9))) * 255).astype(np.uint8))
        t = np.asarray(grid.resize((width, height), Image.BICUBIC), dtype=np.float32) / 255
    return a + t[..., None] * (b - a)


def _blob(rng: np.random.Generator, height: int, width: int) -> list[tuple[float, float]]:
    """An irregular polygon: clutter that is neither round nor angular like the classes."""
    cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(4, 0.15 * min(height, width))
    n = rng.integers(5, 10)
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = radius * rng.uniform(0.35, 1.0, n)
    return [(float(cx + r * math.cos(t)), float(cy + r * math.sin(t))) for t, r in zip(angles, radii)]


def _stroke(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int) -> None:
    points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(rng.integers(2, 6))]
    draw.line(points, fill=_colour(rng), width=int(rng.integers(1, 4)), joint="curve")


def _place_object(rng: np.random.Generator, config: SyntheticConfig, height: int, width: int):
    """A shape of a random class and size at a random position: (label, (x, y), mask (h, w) bool)."""
    label = int(rng.integers(num_classes(config)))
    largest = config.max_object_fraction * min(height, width)
    size = math.exp(rng.uniform(math.log(config.min_object_size), math.log(largest)))
    elongation = math.exp(rng.uniform(-0.5, 0.5))
    w = min(max(round(size * elongation), 4), width)
    h = min(max(round(size / elongation), 4), height)
    if config.patterns:
        shape = PATTERN_SHAPES[rng.integers(len(PATTERN_SHAPES))]
    else:
        shape = SHAPE_CLASSES[label // max(config.colours, 1)]
    mask = _shape_mask(shape, w, h, rng)
    return label, (int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1))), mask


def _shape_mask(shape: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) bool mask of ``shape`` filling its w x h box."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    box = (0, 0, w - 1, h - 1)
    thickness = max(2, round(0.18 * min(w, h)))
    cx, cy = (w - 1) / 2, (h - 1) / 2
    if shape == "rectangle":
        draw.rectangle(box, fill=255)
    elif shape == "frame":
        draw.rectangle(box, outline=255, width=thickness)
    elif shape == "ellipse":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=thickness)
    elif shape == "triangle":  # apex on one of the four sides
        corners = [(0, h - 1), (w - 1, h - 1), (w - 1, 0), (0, 0)]
        side = rng.integers(4)  # base on the bottom, right, top or left side
        apex = [(cx, 0), (0, cy), (cx, h - 1), (w - 1, cy)][side]
        draw.polygon([corners[side], corners[(side + 1) % 4], apex], fill=255)
    elif shape == "cross":
        bar_w, bar_h = max(2, round(0.3 * w)), max(2, round(0.3 * h))
        draw.rectangle((0, round(cy - bar_h / 2), w - 1, round(cy + bar_h / 2) - 1), fill=255)
        draw.rectangle((round(cx - bar_w / 2), 0, round(cx + bar_w / 2) - 1, h - 1), fill=255)
    elif shape == "star":  # five points, randomly turned
        turn = rng.uniform(0, 2 * math.pi)
        points = [(cx + cx * r * math.cos(turn + k * math.pi / 5), cy + cy * r * math.sin(turn + k * math.pi / 5))
                  for k, r in zip(range(10), [1.0, 0.45] * 5)]
        draw.polygon(points, fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, 0), (w - 1, cy), (cx, h - 1), (0, cy)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPE_CLASSES}")
    return np.asarray(canvas) > 0


def _pattern_fill(pattern: str, shape: tuple[int, int], colour: tuple[int, int, int],
                  rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: ``pattern`` in ``colour`` over a dark shade of it (a third of its value, so
    the hue stays readable), with a period of a quarter of the object's short side (3 to 10 px)
    at a random phase."""
    h, w = shape
    period = min(10, max(3, round(min(h, w) / 4)))
    ys, xs = np.mgrid[0:h, 0:w]
    ys, xs = ys + rng.integers(period), xs + rng.integers(period)
    half = period / 2
    if pattern == "solid":
        on = np.ones((h, w), dtype=bool)
    elif pattern == "h-striped":
        on = ys % period < half
    elif pattern == "v-striped":
        on = xs % period < half
    elif pattern == "slashed":
        on = (xs + ys) % period < half
    elif pattern == "backslashed":
        on = (xs - ys) % period < half
    elif pattern == "checked":
        on = (xs // max(1, round(half)) + ys // max(1, round(half))) % 2 == 0
    elif pattern == "dotted":
        on = (xs % period - half + 0.5) ** 2 + (ys % period - half + 0.5) ** 2 < (0.35 * period) ** 2
    elif pattern == "gridded":
        on = (xs % period < period / 3) | (ys % period < period / 3)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")
    bright = np.asarray(colour, dtype=np.float32)
    return np.where(on[..., None], bright, np.rint(bright / 3)).astype(np.uint8)


def _visible_enough(placed: list, height: int, width: int, max_occlusion: float) -> list:
    """The placed objects (bottom to top) whose hidden pixel fraction under the kept objects above
    them is at most ``max_occlusion``; walking top-down, left-out objects hide nothing."""
    covered = np.zeros((height, width), dtype=bool)
    kept = []
    for label, (x, y), mask in reversed(placed):
        above = covered[y:y + mask.shape[0], x:x + mask.shape[1]]
        area = int(mask.sum())
        if area and (mask & above).sum() / area <= max_occlusion:
            above |= mask
            kept.append((label, (x, y), mask))
    return kept[::-1]
