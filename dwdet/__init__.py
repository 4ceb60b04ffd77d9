"""dwdet: Dual Weighting label assignment on an FCOS detector, trained with plain PyTorch."""
__version__ = "0.1.0"
