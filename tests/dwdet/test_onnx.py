"""ONNX export: the grid_sample form of boundary sampling against the dw_ops op, and an exported
graph run in onnxruntime against PyTorch: the shipped demo model with box refinement added (and its
objectness weighted in the ranking), exported through dwdet-export --onnx."""
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import dw_ops
from dw_ops.reference import boundary_sample_dense
from dwdet.engine import builders, load_checkpoint, save_checkpoint
from dwdet.models.head import FCOSHead, boundary_sample_grid
from dwdet.onnx_export import export_onnx, run_onnx
from tests.demo_images import DEMO_MODEL, demo_images
from tests.tool_loader import load_tool


@pytest.mark.parametrize("shape", [(2, 7, 5), (1, 1, 1), (1, 1, 9), (3, 24, 20)])
def test_boundary_sample_grid_equals_the_op(shape):
    n, height, width = shape
    generator = torch.Generator().manual_seed(sum(shape))
    boxes = torch.randn(n, 4, height, width, generator=generator) * 200  # pixel-sized values
    offsets = torch.randn(n, 8, height, width, generator=generator) * 3  # many samples off the map
    offsets[:, :, 0, 0] = -1.0  # on the edge of the zero border
    offsets[:, 0::2, -1, -1] = height - 1e-3  # a hair inside the far edge
    expected = dw_ops.boundary_sample(boxes, offsets)
    got = boundary_sample_grid(boxes, offsets)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(got, boundary_sample_dense(boxes, offsets), atol=1e-3, rtol=1e-5)
    assert (expected == 0).any()  # the case covers samples off the map


def test_the_portable_head_refines_as_the_op_does():
    torch.manual_seed(0)
    head = FCOSHead(3, in_channels=32, num_convs=1, refine=True)
    with torch.no_grad():
        head.reg_offsets.weight.normal_(0, 0.3)  # offsets of cells, not hundredths
    features = [torch.randn(2, 32, h, w) for h, w in ((8, 6), (4, 3), (2, 2), (1, 1), (1, 1))]
    with torch.no_grad():
        _, expected, _ = head(features)
        head.portable = True
        _, got, _ = head(features)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-5)


def assert_same_detections(got, expected):
    """The same detections in the same order, up to float rounding."""
    assert len(got["scores"]) == len(expected["scores"]) > 0
    assert torch.equal(got["labels"], expected["labels"])
    torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-2, rtol=1e-5)


@pytest.fixture(scope="module")
def refining_demo_checkpoint(tmp_path_factory):
    """The shipped demo model with box refinement added: its weights, and random offset weights
    that move the sample points by cells, so that one export (tens of seconds) covers both the
    shipped model's graph and the refinement's sampling."""
    ckpt = load_checkpoint(DEMO_MODEL)
    ckpt["config"]["model"]["refine"] = True
    # a short side of 120 and a long one of 200, so that some images are scaled by their short side
    # and others by their long one (the demo's 192 / 192 scales all by the long side)
    # and a ranking that leans on the objectness, which the graph must carry too
    ckpt["config"]["model"].update(min_size=[120], max_size=200, objectness_power=2.0)
    generator = torch.Generator().manual_seed(0)
    ckpt["model"]["head.reg_offsets.weight"] = torch.randn(8, 64, 3, 3, generator=generator) * 0.3
    ckpt["model"]["head.reg_offsets.bias"] = torch.zeros(8)
    path = tmp_path_factory.mktemp("refine") / "demo_refine.pth"
    save_checkpoint(ckpt, path)
    return path


def test_dwdet_export_onnx_matches_pytorch_with_box_refinement(refining_demo_checkpoint, tmp_path, capsys):
    out = tmp_path / "demo.onnx"
    assert load_tool("export_checkpoint").main([str(refining_demo_checkpoint), str(out), "--onnx"]) == 0
    assert f"to the ONNX graph {out}" in capsys.readouterr().out
    graph = onnx.load(out)
    props = {p.key: p.value for p in graph.metadata_props}
    model, _, categories = builders.load_detector(refining_demo_checkpoint)
    assert model.head.refine and model.objectness_power == 2.0 and json.loads(props["categories"]) == categories
    # post-processing and the refinement's sampling are inside the graph, in standard operators
    assert {"NonMaxSuppression", "TopK", "GridSample"} <= {node.op_type for node in graph.graph.node}
    # one graph for every image size: landscape, portrait and square images, scaled by their short
    # side (to 120) or by their long side (to 200), up or down
    images, _ = demo_images(4, seed=6)
    images += [np.asarray(Image.fromarray(images[0]).resize(size)) for size in ((517, 333), (300, 100), (90, 270))]
    assert {x.shape[:2] for x in images} >= {(144, 192), (192, 144), (192, 192), (333, 517), (100, 300), (270, 90)}
    for pixels in images:
        image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            batch = model.transform([image])[0].tensors
            offsets = model.head.reg_offsets(model.head.reg_tower(model.backbone(batch)["0"]))
            expected = model([image])[0]
        assert offsets.abs().mean() > 1  # the refinement samples away from the cell
        assert_same_detections(run_onnx(out, image), expected)


def test_export_options_are_checked(tmp_path):
    with pytest.raises(SystemExit):
        load_tool("export_checkpoint").main([DEMO_MODEL, str(tmp_path / "m.onnx"), "--onnx", "--half"])
    with pytest.raises(TypeError, match="only dwdet's FCOS detector"):
        export_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / "m.onnx")


def test_missing_onnx_packages_are_named(monkeypatch, tmp_path):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"ONNX export needs onnxscript: pip install 'dwdet\[onnx\]'"):
        export_onnx(builders.load_detector(DEMO_MODEL)[0], tmp_path / "m.onnx")
