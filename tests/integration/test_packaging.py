"""Packaging: a wheel built from the checkout installs into a fresh venv, whose Python then uses
dw_ops (the compiled operators) and dwdet from outside the checkout, and has the commands; the
Python range that the README and pyproject.toml state is the one the sources are checked against."""
import ast
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_stated_python_range_is_the_checked_one():
    minimum = re.fullmatch(r">=3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum, PYPROJECT["project"]["requires-python"]
    oldest = (3, int(minimum.group(1)))
    assert f"Python {oldest[0]}.{oldest[1]} or newer" in (ROOT / "README.md").read_text()
    assert f"Python ≥ {oldest[0]}.{oldest[1]}" in (ROOT / "README.md").read_text()
    assert sys.version_info[:2] >= oldest
    sources = [p for folder in ("dw_ops", "dwdet", "lab", "tools", "tests", "configs") for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 50
    for path in sources:  # syntax newer than the oldest supported Python fails here
        ast.parse(path.read_text(), filename=str(path), feature_version=oldest)


def test_the_pinned_requirements_satisfy_the_package_dependencies():
    pinned = {line.split("==")[0].lower(): line.split("==")[1] for line in
              (ROOT / "requirements.txt").read_text().splitlines() if "==" in line and not line.startswith("#")}
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        assert name in pinned, f"{name} is a dependency of the package but not pinned in requirements.txt"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A venv without dwdet, seeing torch and the other dependencies of this one (no downloads),
    with the wheel of this checkout installed. The wheel is built in-tree, where ninja finds the
    objects of `make build`, so that only the link step runs."""
    tmp = tmp_path_factory.mktemp("packaging")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"),
                    str(ROOT)], check=True, env=env, capture_output=True, timeout=900)
    wheel, = (tmp / "dist").glob("dwdet-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies of this venv, appended after the new venv's own site-packages (a plain path
    # line: the editable install of the checkout here is not activated there)
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True,
                   env=env, capture_output=True, timeout=300)
    return venv, tmp


def test_the_wheel_holds_dw_ops_and_dwdet_only(fresh_venv):
    _, tmp = fresh_venv
    wheel, = (tmp / "dist").glob("dwdet-*.whl")
    packages = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    assert packages == {"dw_ops", "dwdet"}  # not the lab, the tools, the tests or the configs of the checkout
    assert "dwdet/data/sources.py" in zipfile.ZipFile(wheel).namelist()


def test_the_installed_package_works_outside_the_checkout(fresh_venv):
    venv, tmp = fresh_venv
    code = """
import torch, dw_ops, dwdet.engine
print(dw_ops.__file__); print(dwdet.engine.__file__)
boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
points = torch.tensor([[5.0, 5.0], [50.0, 50.0]]); strides = torch.tensor([8.0, 8.0])
distances = torch.full((1, 2, 4), 5.0)
bag = dw_ops.candidate_bag_iou(points, strides, distances, boxes)
print(bag.point_index.tolist(), round(float(bag.iou[0]), 4))
"""
    run = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ops_file, engine_file, bag = run.stdout.splitlines()
    for path in (ops_file, engine_file):
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(ROOT / "dw_ops"), path
    assert bag == "[0] 1.0"  # one pair: point 0, whose predicted box is the GT box itself


@pytest.mark.parametrize("command", ["dwdet-train", "dwdet-test", "dwdet-infer", "dwdet-convert-mmdet", "dwdet-export"])
def test_the_commands_are_installed(fresh_venv, command):
    venv, tmp = fresh_venv
    run = subprocess.run([str(venv / "bin" / command), "--help"], cwd=tmp, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}, timeout=300)
    assert run.returncode == 0 and f"usage: {command}" in run.stdout, run.stderr[-3000:]
