"""The FCOS detector: backbone + FPN, head, a pluggable loss and inference post-processing."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, nms

from dwdet.losses import batch as loss_batch  # a module: dwdet.losses imports dwdet.models.points
from dwdet.models.backbone import Weights, build_backbone, input_normalisation
from dwdet.models.head import DEFAULT_STRIDES, FCOSHead
from dwdet.models.points import level_points
from dwdet.models.transform import DetectionTransform

Detections = List[Dict[str, Tensor]]


class FCOSDetector(nn.Module):
    """A dense detector with the torchvision contract.

    ``model(images, targets)`` in training returns the loss dict of ``loss`` (any module called as
    ``loss(batch)`` on :meth:`training_batch`, in float32); ``model(images)`` in eval returns one
    ``{"boxes" (D, 4) xyxy in the input image's pixels, "labels" (D,) int64, "scores" (D,)}`` per image.
    ``images`` is a list of (3, H, W) float tensors in [0, 1]; targets are ``{"boxes" (G, 4) xyxy
    pixels, "labels" (G,) int64}`` per image (G may be 0).

    Inference: score = sigmoid(cls) * sigmoid(objectness) ** ``objectness_power`` (1 as released;
    0 ranks by the class score alone, above 1 leans on the objectness branch); per level the (point, class) pairs
    with score > ``score_thresh``, at most ``pre_nms_top_n`` of them; boxes clipped to the image,
    class-aware NMS at ``nms_thresh``, the best ``detections_per_img`` kept.
    """

    def __init__(self, backbone: nn.Module, head: FCOSHead, transform: DetectionTransform,
                 loss: Optional[nn.Module] = None, *, score_thresh: float = 0.05, pre_nms_top_n: int = 1000,
                 nms_thresh: float = 0.6, detections_per_img: int = 100, objectness_power: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.transform = transform
        self.loss = loss
        self.score_thresh = score_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.objectness_power = objectness_power

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the epoch about to start, if it has an epoch schedule (TOOD's warm-up)."""
        if hasattr(self.loss, "set_epoch"):
            self.loss.set_epoch(epoch)

    def forward(self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None
                ) -> Union[Dict[str, Tensor], Detections]:
        _check_images(images)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            if self.loss is None:
                raise ValueError("this detector was built without a loss; it can only run in eval mode")
            prepared = self.training_batch(images, targets)
            with torch.autocast(prepared.cls.device.type, enabled=False):
                return self.loss(prepared)
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, _ = self.transform(images)
        features = list(self.backbone(batch.tensors).values())
        outputs = [[x.float() for x in level_maps] for level_maps in self.head(features)]
        detections = self.postprocess(*outputs, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def training_batch(self, images: List[Tensor], targets: List[Dict[str, Tensor]]) -> "loss_batch.Batch":
        """What the loss reads (:func:`dwdet.losses.prepare_batch`): the head's outputs on the resized,
        padded images, with the targets resized alike and checked."""
        loss_batch.check_targets(targets, len(images))  # their form, before resizing them
        batch, targets = self.transform(images, targets)
        outputs = self.head(list(self.backbone(batch.tensors).values()))
        return loss_batch.prepare_batch(*outputs, targets, self.head.strides)

    @torch.no_grad()
    def postprocess(self, cls_logits: List[Tensor], bbox_preds: List[Tensor], objectness: List[Tensor],
                    image_sizes: Sequence[Tuple[int, int]]) -> Detections:
        """Detections of each image of the batch, in the pixels of the (resized, unpadded) image."""
        return self.select(self.candidates(cls_logits, bbox_preds, objectness, image_sizes), image_sizes)

    @torch.no_grad()
    def candidates(self, cls_logits: List[Tensor], bbox_preds: List[Tensor], objectness: List[Tensor],
                   image_sizes: Sequence[Tuple[int, int]], objectness_power: Optional[float] = None) -> Detections:
        """Each image's scored boxes before NMS: per level the best ``pre_nms_top_n`` (point, class)
        pairs above ``score_thresh``, boxes clipped to the (resized, unpadded) image; scored with
        ``objectness_power`` in place of the model's own when it is given."""
        power = self.objectness_power if objectness_power is None else objectness_power
        candidates = []
        for i, image_size in enumerate(image_sizes):
            boxes, scores, labels = [], [], []
            for cls, dist, obj, stride in zip(cls_logits, bbox_preds, objectness, self.head.strides):
                level_boxes, level_scores, level_labels = self._level_candidates(cls[i], dist[i], obj[i], stride, power)
                boxes.append(level_boxes)
                scores.append(level_scores)
                labels.append(level_labels)
            candidates.append({"boxes": clip_boxes_to_image(torch.cat(boxes), image_size), "scores": torch.cat(scores),
                               "labels": torch.cat(labels)})
        return candidates

    @torch.no_grad()
    def select(self, candidates: Detections, image_sizes: Sequence[Tuple[int, int]]) -> Detections:
        """Class-aware NMS of each image's :meth:`candidates` at ``nms_thresh``; the best
        ``detections_per_img`` kept."""
        detections = []
        for found, image_size in zip(candidates, image_sizes):
            boxes, scores, labels = found["boxes"], found["scores"], found["labels"]
            # class-aware NMS the way torchvision's batched_nms does it on GPUs, each class moved to its
            # own region (clipped boxes lie within the image's size), without its branch on the number
            # of boxes, which would not export
            shift = (labels * (max(image_size) + 1)).to(boxes.dtype)[:, None]
            keep = nms(boxes + shift, scores, self.nms_thresh)[:self.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections

    def _level_candidates(self, cls: Tensor, dist: Tensor, obj: Tensor, stride: int, objectness_power: float
                          ) -> Tuple[Tensor, Tensor, Tensor]:
        """The top (point, class) pairs of one level of one image: boxes, scores, labels."""
        num_classes, height, width = cls.shape
        obj_prob = obj.sigmoid() if objectness_power == 1 else obj.sigmoid() ** objectness_power
        scores = (cls.sigmoid() * obj_prob).permute(1, 2, 0).reshape(-1)  # (H * W * C,) point-major
        # the best pre_nms_top_n, then those above the threshold: the same pairs as the other way
        # round, with a size known before the data, so that the graph exports (ONNX)
        scores, candidates = scores.topk(min(self.pre_nms_top_n, len(scores)))
        above = scores > self.score_thresh
        scores, candidates = scores[above], candidates[above]
        point_index, labels = candidates // num_classes, candidates % num_classes
        points = level_points(height, width, stride, dist.device, dist.dtype)[point_index]
        dist = dist.flatten(1)[:, point_index].t()
        boxes = torch.cat((points - dist[:, :2], points + dist[:, 2:]), dim=1)
        return boxes, scores, labels


def build_fcos(num_classes: int, loss: Optional[nn.Module] = None, *, backbone: str = "resnet50",
               backbone_weights: Weights = "IMAGENET1K_V1", backbone_norm: str = "frozen_bn", frozen_stages: int = 1,
               refine: bool = False,
               min_size: Union[int, Sequence[int]] = 800, max_size: int = 1333, test_min_size: Optional[int] = None,
               channels: int = 256, score_thresh: float = 0.05, pre_nms_top_n: int = 1000, nms_thresh: float = 0.6,
               detections_per_img: int = 100, objectness_power: float = 1.0) -> FCOSDetector:
    """The FCOS detector of the DW paper from plain arguments (what configs call).

    Args:
        num_classes: number of object classes (labels are 0-based).
        loss: the training loss (e.g. ``DWLoss`` or ``FCOSLoss``); None for an inference-only model.
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``, ``"resnext101_64x4d"``
            (or the lab's ``"resnet10"``), or ``"efficientnet_lite0"``. The inputs are normalised as
            the backbone's pretrained weights expect (:func:`dwdet.models.backbone.input_normalisation`).
        backbone_weights: torchvision weights name (ImageNet, downloaded once to torchvision's
            cache), the path of a local backbone checkpoint (EfficientNet-Lite0's ImageNet weights:
            ``tools/fetch_backbone.py``), or None for random init.
        backbone_norm: ``"frozen_bn"`` (pretrained backbones) or ``"gn"`` (training from scratch).
        frozen_stages: backbone stages without gradient with ``"frozen_bn"`` (1: the stem and
            stage 1, as released; 4: the whole backbone; see :func:`dwdet.models.backbone.build_resnet`).
        refine: add DW's box refinement.
        min_size, max_size: resize to fit short side <= min_size, long side <= max_size; a
            sequence of min sizes draws one per training image (multi-scale training).
        test_min_size: short side at evaluation (default ``min_size``; required for multi-scale).
        channels: FPN and head width.
        score_thresh, pre_nms_top_n, nms_thresh, detections_per_img, objectness_power: inference
            settings (see :class:`FCOSDetector`).
    """
    return FCOSDetector(build_backbone(backbone, backbone_weights, channels, backbone_norm, frozen_stages),
                        FCOSHead(num_classes, channels, strides=DEFAULT_STRIDES, refine=refine),
                        DetectionTransform(min_size, max_size, test_min_size, **input_normalisation(backbone)), loss,
                        score_thresh=score_thresh, pre_nms_top_n=pre_nms_top_n, nms_thresh=nms_thresh,
                        detections_per_img=detections_per_img, objectness_power=objectness_power)


def _check_images(images: List[Tensor]) -> None:
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError(f"images must be a non-empty list of (3, H, W) tensors, got {type(images).__name__}")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 or min(image.shape[1:]) == 0:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"images[{i}] must be a (3, H, W) tensor with H, W > 0, got {shape}")
