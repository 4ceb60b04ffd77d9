"""Images like the shipped demo model's (shapes16: two hues of the eight shapes on 192-pixel
images), drawn by the synthetic renderer, with their objects: what the API, CLI and ONNX tests feed
weights/dw_r10_shapes16_demo.pth."""
import os

import numpy as np

from lab.synthetic import SyntheticConfig, class_names, render_image
from tests.paths import ROOT

DEMO_MODEL = os.path.join(ROOT, "weights", "dw_r10_shapes16_demo.pth")
DEMO_CONFIG = dict(colours=2, image_size=192, min_objects=3, max_objects=6, min_object_size=16)


def demo_images(count, seed=0, aspect_ratios=(0.75, 1.0, 4 / 3)):
    """``count`` (H, W, 3) uint8 RGB images and, for each, its objects as (class name, [x1, y1, x2, y2])."""
    config = SyntheticConfig(aspect_ratios=aspect_ratios, **DEMO_CONFIG)
    names = class_names(config.colours)
    rng = np.random.default_rng(seed)
    images, objects = [], []
    for _ in range(count):
        pixels, placed = render_image(rng, config)
        images.append(pixels)
        objects.append([(names[label], [x, y, x + w, y + h]) for label, (x, y, w, h) in placed])
    return images, objects
