"""lab/check_imagenet_backbone.py's classifier on dwdet's backbone, and lab/time_training.py's summary."""
import efficientnet_lite_pytorch as reference
import torch

from dwdet.models import build_efficientnet
from dwdet.models.efficientnet import rename_reference_state
from lab import check_imagenet_backbone, time_training


def test_the_backbone_and_the_wheels_classifier_give_the_references_logits(tmp_path):
    torch.manual_seed(0)
    model = reference.EfficientNet.from_name("efficientnet-lite0", image_size=None).eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.1)
    state = model.state_dict()
    torch.save(rename_reference_state(state)[0], tmp_path / "lite0.pth")
    body = build_efficientnet(weights=tmp_path / "lite0.pth").eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(check_imagenet_backbone.classify(body, state, x), model(x), rtol=1e-4, atol=1e-4)
    image = check_imagenet_backbone.photograph(64)
    assert image.shape == (1, 3, 64, 64) and 0 <= image.min() < image.max() <= 1


def test_the_timing_summary_gives_medians_and_paired_ratios():
    result = time_training.summary({"a.py": [1.0, 2.0, 3.0, 4.0], "b.py": [3.0, 4.0, 6.0, 8.0]})
    assert result["a.py"]["median_s"] == 2.5 and result["a.py"]["ratio_to_first"]["median"] == 1.0
    assert result["b.py"]["median_s"] == 5.0
    assert result["b.py"]["ratio_to_first"]["median"] == 2.0  # the rounds' ratios 3, 2, 2, 2
