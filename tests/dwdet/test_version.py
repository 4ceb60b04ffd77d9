"""The version the package reports is the one it is released as."""
import re

import dwdet
from tests.paths import ROOT


def test_dwdet_version_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert dwdet.__version__ == re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
