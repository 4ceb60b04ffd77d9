"""Build the dw_ops._C extension; the package metadata is in pyproject.toml.

    pip install --no-build-isolation -e .      # what `make build` does
    pip install --no-build-isolation .         # into any environment that has torch

CPU kernels are always built. CUDA kernels are built when a CUDA toolkit is found and either a GPU
is visible or FORCE_CUDA=1 (e.g. on a build machine without a GPU). The fixes for the usual build
pitfalls (CUDA_HOME guessed wrong, no TORCH_CUDA_ARCH_LIST without a GPU, headers that live in the
CUDA wheels rather than the toolkit) are applied here so that users need not know about them.
"""
import glob
import os
import sys
import sysconfig

from setuptools import setup

# Data-centre and consumer GPUs that nvcc 12/13 can target (Turing .. Blackwell), plus PTX for newer.
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"


def _guess_cuda_home() -> None:
    # torch.utils.cpp_extension reads CUDA_HOME at import; it can mistake /usr/local for the toolkit.
    if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
        for candidate in ("/usr/local/cuda",):
            if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
                os.environ["CUDA_HOME"] = candidate


_guess_cuda_home()

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CPU", "0") == "1":
        return False
    if torch.version.cuda is None or CUDA_HOME is None:
        if os.environ.get("FORCE_CUDA", "0") == "1":
            sys.exit("FORCE_CUDA=1 but torch is a CPU build or no CUDA toolkit was found "
                     "(set CUDA_HOME to the toolkit folder).")
        return False
    return torch.cuda.is_available() or os.environ.get("FORCE_CUDA", "0") == "1"


def _wheel_cuda_include_dirs() -> list:
    # The CUDA toolkit on a machine may lack headers (e.g. cusparse.h) that the torch wheel's
    # nvidia-* dependencies ship; ATen's CUDA headers include them.
    dirs = []
    for base in sys.path:
        dirs += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted({d for d in dirs if os.path.isdir(d)})


def _visible_archs() -> str:
    """The compute capabilities of the visible GPUs, as TORCH_CUDA_ARCH_LIST spells them ("9.0")."""
    if not torch.cuda.is_available():
        return ""
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in caps)


def _simd_flags() -> list:
    # The CPU kernels use ATen's Vectorized types; compile them for AVX2 when this CPU has it
    # (DW_CPU_ARCH=generic builds a portable extension instead, e.g. for a wheel).
    if os.environ.get("DW_CPU_ARCH", "native") == "generic":
        return []
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return []


def _extension():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    include_dirs = [os.path.join(HERE, "csrc")]
    # -fopenmp: at::parallel_for is header code that runs serially unless the extension itself is
    # compiled with OpenMP. The C++ standard is the one cpp_extension picks for this torch.
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-Wno-unknown-pragmas"] + _simd_flags()
    link_flags = ["-fopenmp"]
    define_macros = [("DW_TORCH_VERSION", f'"{torch.__version__}"')]
    if not _want_cuda():
        return CppExtension("dw_ops._C", sources, include_dirs=include_dirs, extra_link_args=link_flags,
                            extra_compile_args={"cxx": cxx_flags}, define_macros=define_macros)
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        # Name the archs built, so that build_info() reports them: the visible GPUs', else the default list.
        os.environ["TORCH_CUDA_ARCH_LIST"] = _visible_archs() or DEFAULT_CUDA_ARCHS
    archs = os.environ["TORCH_CUDA_ARCH_LIST"]
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    define_macros += [("WITH_CUDA", None), ("DW_CUDA_ARCHS", f'"{archs}"')]
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    # The toolkit's headers first: the wheels' may be of another CUDA minor version, and fill in only
    # the headers the toolkit lacks.
    include_dirs += [os.path.join(CUDA_HOME, "include")] + _wheel_cuda_include_dirs()
    return CUDAExtension("dw_ops._C", sources, include_dirs=include_dirs,
                         extra_link_args=link_flags,
                         extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                         define_macros=define_macros)


class _BuildExtension(BuildExtension):
    def finalize_options(self) -> None:
        super().finalize_options()
        # An editable install (`make build`) would compile in a fresh temporary folder every time;
        # in the checkout's build/ instead, ninja recompiles only what changed since the last build
        # of any kind (`setup.py build_ext --inplace` and wheels use the same folder).
        if getattr(self, "editable_mode", False):
            self.build_temp = os.path.join(HERE, "build", f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}")


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": _BuildExtension.with_options(use_ninja=True)},
)
