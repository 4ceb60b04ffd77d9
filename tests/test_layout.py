"""The test folders mirror the code (tests/dw_ops, tests/dwdet/..., tests/tools) without standing in for
it. They hold no __init__.py: pytest then imports each test file by its basename, with the file's own
folder put first on sys.path, so basenames must be unique, and a folder such as tests/dwdet must never
be found in place of the real package."""
import json
import os
import subprocess
import sys
from collections import Counter

import dw_ops
import dwdet
from tests.paths import ROOT

TESTS = ROOT / "tests"


def test_the_packages_under_test_are_the_repository_s():
    assert dwdet.__file__ == str(ROOT / "dwdet" / "__init__.py")
    assert dw_ops.__file__ == str(ROOT / "dw_ops" / "__init__.py")


def test_no_test_folder_is_a_regular_package():
    assert sorted(str(p.relative_to(ROOT)) for p in TESTS.rglob("__init__.py")) == []


def test_every_python_file_under_tests_has_its_own_basename():
    counts = Counter(p.name for p in TESTS.rglob("*.py"))
    assert {name: n for name, n in counts.items() if n > 1} == {}


def test_the_code_is_found_before_the_test_folders_on_any_sys_path():
    # A fresh interpreter with every test folder in front of the repository, as pytest leaves
    # sys.path once it has imported test files from all of them, looks up each package of the
    # repository and each script of tools/ (a namespace package: without an __init__.py of its own,
    # a tests/tools/X.py would be found in place of a tools/X.py).
    folders = sorted({str(p.parent) for p in TESTS.rglob("test_*.py")})
    expected = {p.parent.name: str(p) for p in sorted(ROOT.glob("*/__init__.py"))}
    expected.update({f"tools.{p.stem}": str(p) for p in sorted((ROOT / "tools").glob("*.py"))})
    assert {"dwdet", "dw_ops", "tools.bench_train"} <= expected.keys() and len(folders) >= 8
    code = ("import importlib.util, json, sys\n"
            f"sys.path[:0] = {folders!r}\n"
            f"print(json.dumps({{name: importlib.util.find_spec(name).origin for name in {sorted(expected)!r}}}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
