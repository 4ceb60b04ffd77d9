"""How the extension reports its build, and the error when it is not built."""
import os
import subprocess
import sys

import torch

import dw_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
