"""Dependencies point one way: tools -> lab -> dwdet -> dw_ops. The packages that the wheel ships
(dw_ops, dwdet) never import the lab or the tools of a checkout, which the wheel does not hold; the
lab never imports the tools. Checked on the source, imports inside functions included."""
import ast
from pathlib import Path

import pytest

from tests.paths import ROOT

# each folder, and the top-level packages of this checkout that its code must not import
FORBIDDEN = {"dw_ops": {"dwdet", "lab", "tools"}, "dwdet": {"lab", "tools"}, "lab": {"tools"}}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``: import statements at any depth, and
    ``importlib.import_module`` / ``__import__`` of a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return sorted(found)


def forbidden_imports(folder: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imported_modules(path.read_text()):
            if module.split(".")[0] in FORBIDDEN[folder]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_the_check_sees_every_form_of_import():
    source = ("import lab.synthetic\nfrom lab import runner\ndef f():\n    from tools.bench_ops import x\n"
              "importlib.import_module('lab.synthetic')\n__import__('tools')\nfrom . import lab\nimport labels\n")
    assert [m for _, m in imported_modules(source)] == ["lab.synthetic", "lab", "tools.bench_ops", "lab.synthetic",
                                                         "tools", "labels"]


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_point_one_way(folder):
    assert len(list((ROOT / folder).rglob("*.py"))) > 5
    assert forbidden_imports(folder) == []
