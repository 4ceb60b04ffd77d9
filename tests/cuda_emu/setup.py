"""Build the CPU emulation of the dw_ops CUDA kernels, a test-only extension (`make emu`).

    python tests/cuda_emu/setup.py build_ext --inplace   (from the repository root)
"""
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

setup(
    name="dw_cuda_emu",
    ext_modules=[CppExtension("_cuda_emu", [os.path.join(HERE, "emu_ops.cpp")],
                              include_dirs=[os.path.join(ROOT, "csrc"), HERE],
                              extra_compile_args=["-O2", "-g0", "-pthread"], extra_link_args=["-pthread"])],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
