"""dwdet: Dual Weighting label assignment on an FCOS detector, trained with plain PyTorch."""
__version__ = "0.2.0"  # the same as pyproject.toml (tests/test_version.py)
