"""The version the package reports is the one it is released as."""
import re
from pathlib import Path

import dwdet


def test_dwdet_version_matches_pyproject():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert dwdet.__version__ == re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
