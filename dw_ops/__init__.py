"""dw_ops: fused C++/CUDA operators for Dual Weighting label assignment.

Importing this package loads the compiled extension (``python setup.py build_ext --inplace``)
and registers the ``torch.ops.dw_ops`` operators with their fake kernels and autograd.
Plain-PyTorch dense references of every operator are in :mod:`dw_ops.reference`.
"""
from dw_ops._ext import build_info
from dw_ops.ops import (BagPairs, DualWeights, boundary_sample, candidate_bag_iou, dual_weights, merge_entries,
                        neg_loss, pair_entry_index, pair_scores)

__all__ = ["BagPairs", "DualWeights", "boundary_sample", "build_info", "candidate_bag_iou", "dual_weights",
           "merge_entries", "neg_loss", "pair_entry_index", "pair_scores"]
