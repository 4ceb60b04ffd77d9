"""torchvision's FCOS (``torchvision.models.detection.FCOS``: its head, anchors, loss and
post-processing) on our backbone + FPN and our resize rule, so that it can be compared with our
detector and losses on exactly the same features and inputs."""
from typing import Optional, Sequence, Union

from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from dwdet.models.backbone import Weights, build_backbone, input_normalisation
from dwdet.models.head import DEFAULT_STRIDES
from dwdet.models.transform import DetectionTransform


def build_torchvision_fcos(num_classes: int, *, backbone: str = "resnet50", backbone_weights: Weights = "IMAGENET1K_V1",
                           backbone_norm: str = "frozen_bn", frozen_stages: int = 1,
                           min_size: Union[int, Sequence[int]] = 800,
                           max_size: int = 1333, test_min_size: Optional[int] = None, channels: int = 256,
                           score_thresh: float = 0.05, pre_nms_top_n: int = 1000, nms_thresh: float = 0.6,
                           detections_per_img: int = 100, center_sampling_radius: float = 1.5) -> FCOS:
    """torchvision's FCOS with the arguments of :func:`dwdet.models.build_fcos` (same meaning).

    Its loss is torchvision's (focal loss, GIoU, centerness BCE, center sampling with
    ``center_sampling_radius``), so no ``loss`` argument; box refinement does not exist there.
    """
    fpn = build_backbone(backbone, backbone_weights, channels, backbone_norm, frozen_stages)
    # one anchor per location whose side is the level's stride: torchvision's FCOS reads the
    # points and the scale ranges off these boxes
    anchors = AnchorGenerator(sizes=tuple((stride,) for stride in DEFAULT_STRIDES),
                              aspect_ratios=((1.0,),) * len(DEFAULT_STRIDES))
    model = FCOS(fpn, num_classes, anchor_generator=anchors, center_sampling_radius=center_sampling_radius,
                 score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                 topk_candidates=pre_nms_top_n)
    # our resize rule and normalisation, the same inputs
    model.transform = DetectionTransform(min_size, max_size, test_min_size, **input_normalisation(backbone))
    return model
