"""Loads the compiled extension (which registers the torch.ops.dw_ops operators)."""
import torch  # noqa: F401  (the extension links against torch: load it first)

BUILD_HINT = "build it with `python setup.py build_ext --inplace` in the repository root (or `make build`)"

try:
    from dw_ops import _C  # noqa: F401
except ImportError as err:  # not built, or built against another torch
    if "undefined symbol" in str(err):
        raise ImportError(f"dw_ops._C was built against another torch than {torch.__version__}: re-{BUILD_HINT} "
                          f"after deleting build/ ({err})") from err
    raise ImportError(f"the dw_ops C++/CUDA extension (dw_ops._C) is not built: {BUILD_HINT}. ({err})") from err


def build_info() -> dict:
    """How the extension was built: CUDA kernels or not, the CUDA archs, the torch it was built for."""
    return {"with_cuda": _C.with_cuda(), "cuda_archs": _C.cuda_archs(), "torch": _C.torch_version()}
