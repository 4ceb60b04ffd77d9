"""Resizing, normalisation and padding of input images (and the way back for boxes)."""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DetectionTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform with the released model's resize rule.

    Each image is scaled to fit ``short side <= min_size`` and ``long side <= max_size`` keeping
    its aspect ratio, with sizes rounded to the nearest pixel (as mmcv does). In training the short
    side is drawn uniformly per image from ``min_size`` when it is a sequence (e.g.
    ``range(480, 961)`` for multi-scale training); evaluation always uses ``test_min_size``
    (torchvision would use the last training size). Normalisation, padding to
    ``size_divisible`` and mapping boxes back to the input pixels are torchvision's.
    """

    def __init__(self, min_size: Union[int, Sequence[int]] = 800, max_size: int = 1333,
                 test_min_size: Optional[int] = None, size_divisible: int = 32,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD) -> None:
        train_sizes = (min_size,) if isinstance(min_size, int) else tuple(int(s) for s in min_size)
        if not train_sizes or min(train_sizes) <= 0 or max_size <= 0:
            raise ValueError(f"min_size and max_size must be positive, got min_size={min_size}, max_size={max_size}")
        if test_min_size is None:
            if len(train_sizes) > 1:
                raise ValueError("test_min_size is required when min_size is a range of training sizes")
            test_min_size = train_sizes[0]
        super().__init__(train_sizes, max_size, list(image_mean), list(image_std), size_divisible)
        self.test_min_size = test_min_size

    def resize(self, image: Tensor, target: Optional[Dict[str, Tensor]] = None
               ) -> Tuple[Tensor, Optional[Dict[str, Tensor]]]:
        height, width = image.shape[-2:]
        if self.training:
            short_side = self.min_size[int(torch.randint(len(self.min_size), ()))]
        else:
            short_side = self.test_min_size
        new_size = fit_size((height, width), short_side, self.max_size)
        image = F.interpolate(image[None], size=new_size, mode="bilinear", align_corners=False)[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], [height, width], list(new_size))
        return image, target


def fit_size(size: Tuple[int, int], short_side: int, max_size: int) -> Tuple[int, int]:
    """(H, W) scaled by ``min(short_side / short, max_size / long)``, rounded to the nearest pixel."""
    height, width = size
    scale = min(short_side / min(height, width), max_size / max(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)
