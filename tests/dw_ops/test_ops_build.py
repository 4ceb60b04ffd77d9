"""How the extension reports its build, and the error when it is not built."""
import os
import subprocess
import sys

import pytest
import torch

import dw_ops
from tests.paths import ROOT


def test_build_info_reports_how_it_was_built():
    info = dw_ops.build_info()
    assert info["torch"] == torch.__version__
    assert info["with_cuda"] == bool(info["cuda_archs"])
    if torch.cuda.is_available():
        assert info["with_cuda"], "a CUDA machine should build the CUDA kernels"


def test_missing_extension_error_names_the_build_command():
    # sys.modules[name] = None makes `import name` fail as if the .so were absent.
    code = ("import sys; sys.modules['dw_ops._C'] = None\n"
            "try:\n    import dw_ops\nexcept ImportError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "is not built" in out.stdout and "python setup.py build_ext --inplace" in out.stdout, out.stdout + out.stderr


def _cuda_extension(monkeypatch, arch_list=None):
    """The CUDA extension setup.py describes (FORCE_CUDA=1), with setuptools.setup intercepted."""
    import runpy

    import setuptools
    from torch.utils.cpp_extension import CUDA_HOME
    if torch.version.cuda is None or CUDA_HOME is None:
        pytest.skip("needs a CUDA build of torch and a CUDA toolkit")
    monkeypatch.delenv("FORCE_CPU", raising=False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)  # restored after the test, whatever setup.py sets
    monkeypatch.setenv("FORCE_CUDA", "1")
    if arch_list:
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_list)
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path(os.path.join(ROOT, "setup.py"))
    return captured["ext_modules"][0], CUDA_HOME


def test_build_puts_the_toolkits_cuda_headers_before_the_wheels(monkeypatch):
    ext, cuda_home = _cuda_extension(monkeypatch)
    toolkit = ext.include_dirs.index(os.path.join(cuda_home, "include"))
    wheels = [i for i, d in enumerate(ext.include_dirs) if f"{os.sep}nvidia{os.sep}" in d]
    assert all(toolkit < i for i in wheels), ext.include_dirs


def test_build_info_names_the_archs_built_for_the_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (9, 0))
    ext, _ = _cuda_extension(monkeypatch)
    assert ("DW_CUDA_ARCHS", '"9.0"') in ext.define_macros
    ext, _ = _cuda_extension(monkeypatch, arch_list="8.6;9.0")
    assert ("DW_CUDA_ARCHS", '"8.6;9.0"') in ext.define_macros
