"""dwdet: Dual Weighting label assignment for dense object detectors (FCOS), in PyTorch."""
