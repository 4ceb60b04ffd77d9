"""lab/grad_parts.py: each part's gradient norm under a loss, on the same batches."""
import math

import pytest
import torch
from torch import nn

from dwdet.models import build_fcos
from lab import grad_parts


class ClassSum(nn.Module):
    """A loss that reaches the class branch only: the sum of the class logits, times ``scale``."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, batch):
        return {"loss_cls": self.scale * batch.cls.sum()}


def _model():
    torch.manual_seed(0)
    return build_fcos(3, None, backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=32,
                      min_size=(48, 64), max_size=64, test_min_size=64)


def _batches():
    image = torch.rand(3, 40, 56)
    target = {"boxes": torch.tensor([[4.0, 6.0, 30.0, 34.0]]), "labels": torch.tensor([1])}
    return [((image, image.flip(-1)), (target, target))] * 2


def test_norms_per_part_follow_the_loss_and_only_the_parts_it_reaches():
    model, batches = _model(), _batches()
    once = grad_parts.part_gradient_norms(model, ClassSum(1.0), batches, "none")
    twice = grad_parts.part_gradient_norms(model, ClassSum(2.0), batches, "none")
    # the class branch and what feeds it; not the box and objectness outputs nor their tower
    assert {"backbone.body", "backbone.fpn", "head.cls_tower", "head.cls_logits"} <= set(once)
    assert not {"head.bbox_pred", "head.objectness", "head.reg_tower"} & set(once)
    for part, norms in once.items():
        assert len(norms) == 2 and all(n > 0 for n in norms)
        assert twice[part] == pytest.approx([2 * n for n in norms], rel=1e-5)
    # the class logits' norm by hand, with the training size drawn from the same seed
    model.loss = ClassSum(1.0)
    grad_parts.seed_everything(0)
    model.zero_grad(set_to_none=True)
    sum(model(list(batches[0][0]), list(batches[0][1])).values()).backward()
    by_hand = math.sqrt(sum(float(p.grad.square().sum()) for n, p in model.named_parameters()
                            if n.startswith("head.cls_logits.")))
    assert once["head.cls_logits"][0] == pytest.approx(by_hand, rel=1e-5)


def test_part_is_the_first_two_components_of_the_name():
    assert grad_parts.part_of("head.cls_logits.weight") == "head.cls_logits"
    assert grad_parts.part_of("backbone.body.layer1.0.conv1.weight") == "backbone.body"
