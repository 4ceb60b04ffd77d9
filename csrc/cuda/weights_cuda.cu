// CUDA backend of the dual weights and of the fused negative classification term (loss and, with
// compute_grad, its gradients in the same pass); the kernels are in weights_kernels.cuh.
// The math is dw_math.h's and the steps around the kernels glue.h's, as in cpu/weights_cpu.cpp.
// Every sum has a fixed shape for a given input: block reductions in the kernels, the per-block
// partials summed by at::sum, entries of one point merged by a deterministic index_put_. The
// results are therefore the same run to run on one GPU model; another GPU model (or another ATen
// version) may split at::sum differently and differ in the last bits.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/aten.h"
#include "common/checks.h"
#include "common/glue.h"
#include "cuda/launch.cuh"
#include "cuda/weights_kernels.cuh"

namespace dw_ops {
namespace {

using gpu::blocks_for;
using gpu::launch;
using namespace kernels;

// Blocks of the grid-wide reduction of neg_loss's dense term: a fixed cap keeps the number of
// partials, and so the summation order inside the kernel, independent of the GPU's size.
constexpr int64_t kReduceBlocks = 1024;

std::tuple<at::Tensor, at::Tensor> dual_weights_cuda(const at::Tensor& score_, const at::Tensor& iou_,
                                                     const at::Tensor& giou_loss_, const at::Tensor& prior_,
                                                     const at::Tensor& gt_pair_offsets_, int64_t pos_mode,
                                                     double beta, double mu_num, double mu_den, int64_t neg_mode,
                                                     double gamma1) {
  check_dual_weights(score_, iou_, giou_loss_, prior_, gt_pair_offsets_);
  // The kernel checks the offsets' values, but without a GT it has no block to check them in.
  TORCH_CHECK(gt_pair_offsets_.numel() > 1 || score_.numel() == 0, "gt_pair_offsets must start at 0 and end at K = ",
              score_.numel(), ", but it has a single element (no GT)");
  const c10::cuda::CUDAGuard guard(score_.device());
  const auto score = score_.contiguous(), iou = iou_.contiguous(), giou_loss = giou_loss_.contiguous();
  const auto prior = prior_.contiguous(), offsets = gt_pair_offsets_.contiguous();
  const int64_t M = offsets.numel() - 1;
  auto pos_weight = at::empty_like(score);
  auto neg_prob = at::empty_like(score);
  if (score.numel() == 0) return {pos_weight, neg_prob};
  AT_DISPATCH_FLOATING_TYPES(score.scalar_type(), "dual_weights_cuda", [&] {
    launch(dual_weights_kernel<scalar_t>, static_cast<unsigned int>(std::min(M, gpu::kMaxBlocks)),
           score.data_ptr<scalar_t>(), iou.data_ptr<scalar_t>(), giou_loss.data_ptr<scalar_t>(),
           prior.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), M, score.numel(),
           static_cast<math::PosMode>(pos_mode), static_cast<math::NegMode>(neg_mode), static_cast<scalar_t>(beta),
           static_cast<scalar_t>(mu_num), static_cast<scalar_t>(mu_den), static_cast<scalar_t>(gamma1),
           pos_weight.data_ptr<scalar_t>(), neg_prob.data_ptr<scalar_t>());
  });
  return {pos_weight, neg_prob};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neg_loss_cuda(const at::Tensor& cls_logits, const at::Tensor& ctr_logits,
                                                             const at::Tensor& entry_index,
                                                             const at::Tensor& entry_weight, double gamma_out,
                                                             double gamma_in, double base_weight, bool compute_grad) {
  check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight);
  const c10::cuda::CUDAGuard guard(cls_logits.device());
  const int64_t N = cls_logits.size(0), P = cls_logits.size(1), C = cls_logits.size(2);
  const int64_t U = entry_index.numel();
  const auto x = class_major(cls_logits);  // (N, P, C) view of (N, C, P) memory
  const auto ctr = ctr_logits.to(x.scalar_type()).contiguous();
  const auto index = entry_index.contiguous();
  const auto weight = entry_weight.to(at::kDouble).contiguous();
  at::Tensor grad_cls, grad_ctr;  // (no structured binding: lambdas capture them only from C++20)
  std::tie(grad_cls, grad_ctr) = neg_loss_grad_buffers(x, compute_grad);
  auto ctr_corr = at::empty({compute_grad ? U : 0}, x.options());
  // terms = [one partial per block of the dense sum, one correction per listed entry]; at::sum
  // adds them in a fixed order (deterministic). No rows and no entries give a zero loss.
  const int64_t blocks = N * P > 0 ? blocks_for(N * P, kReduceBlocks) : 0;
  auto terms = at::zeros({blocks + U}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "neg_loss_cuda", [&] {
    const scalar_t g_out = gamma_out, g_in = gamma_in, base = base_weight;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* cp = ctr.data_ptr<scalar_t>();
    scalar_t* gc = grad_cls.data_ptr<scalar_t>();
    double* out = terms.data_ptr<double>();
    if (blocks > 0) {
      const auto kernel = compute_grad ? neg_loss_dense_kernel<scalar_t, true> : neg_loss_dense_kernel<scalar_t, false>;
      launch(kernel, static_cast<unsigned int>(blocks), xp, cp, N, P, C, g_out, base, gc,
             grad_ctr.data_ptr<scalar_t>(), out);
    }
    if (U > 0) {
      const auto kernel = compute_grad ? neg_loss_entry_kernel<scalar_t, true> : neg_loss_entry_kernel<scalar_t, false>;
      launch(kernel, blocks_for(U), xp, cp, N, P, C, index.data_ptr<int64_t>(), weight.data_ptr<double>(), U, g_out,
             g_in, base, out + blocks, gc, ctr_corr.data_ptr<scalar_t>());
    }
  });
  if (compute_grad && U > 0) {  // entries of one point share its centerness gradient
    accumulate_into(grad_ctr.view(-1), index.div(C, "floor"), ctr_corr);
  }
  const auto loss = terms.sum().to(neg_loss_dtype(cls_logits));
  return {loss, grad_cls.to(cls_logits.scalar_type()), grad_ctr.to(ctr_logits.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CUDA, m) {
  m.impl("dual_weights", &dual_weights_cuda);
  m.impl("neg_loss", &neg_loss_cuda);
}

}  // namespace dw_ops
