"""dwdet: Dual Weighting label assignment on an FCOS detector, trained with plain PyTorch."""
__version__ = "0.2.0"  # the same as pyproject.toml (tests/dwdet/test_version.py)
from dwdet.api import Detections, Detector  # noqa: E402,F401  the Python API: Detector.from_checkpoint(path).predict(images)
