"""Every file shipped in weights/ is listed in docs/benchmarks.md with the sha256 it has."""
import hashlib
import re
import subprocess

import pytest

from tests.paths import ROOT

ROW = re.compile(r"^\| `(weights/[^`]+)` \|.*\| `([0-9a-f]{64})` \|$")


def _listed() -> dict[str, str]:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    block = text.split("<!-- shipped-weights -->", 1)[1].split("<!-- /shipped-weights -->", 1)[0]
    return dict(m.groups() for line in block.splitlines() if (m := ROW.match(line)))


def _shipped() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files", "weights"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: which files are shipped is unknown")
    return {line for line in out.stdout.splitlines() if line.endswith((".pth", ".pt"))}


def test_every_shipped_weight_is_listed_with_its_sha256():
    listed = _listed()
    assert listed, "docs/benchmarks.md has no shipped-weights table"
    assert _shipped() == set(listed), "weights/ and the docs' table list different files"
    for path, expected in listed.items():
        digest = hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
        assert digest == expected, f"{path}: sha256 {digest}, but docs/benchmarks.md says {expected}"
