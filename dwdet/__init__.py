<<<<<<< HEAD
"""dwdet: Dual Weighting label assignment on an FCOS detector, trained with plain PyTorch."""
__version__ = "0.1.0"
=======
"""dwdet: Dual Weighting label assignment for dense object detectors (FCOS), in PyTorch."""
>>>>>>> model
