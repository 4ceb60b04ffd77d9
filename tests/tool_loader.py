"""Import a script of tools/ as a module (the tools are scripts, not an installed package)."""
import importlib.util
import os
import sys

from tests.paths import ROOT


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
