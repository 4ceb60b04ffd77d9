// Operator schemas (one TORCH_LIBRARY block) and the Python module that reports how the extension
// was built. Kernels register per backend in cpu/*.cpp and cuda/*.cu; fake (meta) kernels and
// autograd are registered from Python (dw_ops/_registration.py), except boundary_sample's autograd
// (autograd.cpp). The module needs pybind11 alone: <torch/extension.h> would triple this file's
// build time.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include <string>

TORCH_LIBRARY(dw_ops, m) {
  // Candidate bag: every (GT, point) pair with the point strictly inside the GT box, grouped per GT.
  m.def("bag_pairs(Tensor points, Tensor gt_boxes) -> (Tensor pair_gt, Tensor pair_point, Tensor gt_pair_offsets)");
  // Center prior, IoU and 1 - GIoU of each bag pair; differentiable w.r.t. distances (giou_loss only).
  m.def("bag_iou(Tensor points, Tensor strides, Tensor distances, Tensor gt_boxes, Tensor gt_image, "
        "Tensor pair_gt, Tensor pair_point, float sigma, bool hard_prior) -> (Tensor prior, Tensor iou, Tensor giou_loss)");
  m.def("_bag_iou_backward(Tensor grad_giou_loss, Tensor points, Tensor distances, Tensor gt_boxes, "
        "Tensor gt_image, Tensor pair_gt, Tensor pair_point) -> Tensor");
  // Per-pair positive weight (normalised per GT) and negative probability P_neg; detached.
  m.def("dual_weights(Tensor score, Tensor iou, Tensor giou_loss, Tensor prior, Tensor gt_pair_offsets, "
        "int pos_mode, float beta, float mu_num, float mu_den, int neg_mode, float gamma1) "
        "-> (Tensor pos_weight, Tensor neg_prob)");
  // sum over all (n, p, k) of w * s^gamma * BCE(s, 0), s = sigmoid(cls) * sigmoid(ctr), where w is
  // base_weight (with gamma_out) except at the listed entries (entry_weight, with gamma_in). With
  // compute_grad it also returns d loss / d cls and d loss / d ctr from the same single pass (the
  // backward then only scales them); otherwise the two gradients are empty.
  m.def("neg_loss(Tensor cls_logits, Tensor ctr_logits, Tensor entry_index, Tensor entry_weight, "
        "float gamma_out, float gamma_in, float base_weight, bool compute_grad) -> (Tensor loss, Tensor grad_cls, Tensor grad_ctr)");
  // Each of the 4 box channels bilinearly sampled at its own (dy, dx) offset, deform-conv style.
  m.def("boundary_sample(Tensor boxes, Tensor offsets) -> Tensor");
  m.def("_boundary_sample_backward(Tensor grad, Tensor boxes, Tensor offsets) -> (Tensor, Tensor)");
}

namespace {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_archs() {
#ifdef DW_CUDA_ARCHS
  return DW_CUDA_ARCHS;
#else
  return "";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "dw_ops kernels; importing this module registers the torch.ops.dw_ops operators";
  m.def("with_cuda", &with_cuda, "True when the CUDA kernels were compiled in");
  m.def("cuda_archs", &cuda_archs, "TORCH_CUDA_ARCH_LIST the CUDA kernels were compiled for ('' without CUDA)");
  m.def("torch_version", []() { return std::string(DW_TORCH_VERSION); }, "torch version the extension was built against");
}
