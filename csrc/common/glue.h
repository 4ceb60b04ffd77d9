// Device-independent steps around the kernels (allocation, segment offsets, deterministic
// scatter-adds), shared by the CPU and CUDA implementations so that they differ only in the
// kernels themselves.
#pragma once

#include "common/aten.h"
#include <ATen/OpMathType.h>

namespace dw_ops {

// Pairs from the (M, P) inside mask (the CUDA path; the CPU counts and fills per GT without a mask): nonzero walks it row-major, so the pairs come grouped per GT
// with points ascending; gt_pair_offsets[g] .. gt_pair_offsets[g + 1] are GT g's pairs.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> pairs_from_mask(const at::Tensor& inside) {
  const int64_t M = inside.size(0);
  const auto idx = at::nonzero(inside);
  auto offsets = at::zeros({M + 1}, inside.options().dtype(at::kLong));
  if (M > 0) offsets.narrow(0, 1, M).copy_(inside.sum(1).cumsum(0));
  // nonzero's (K, 2) result is column-major: clone so that the two outputs do not share storage.
  return {idx.select(1, 0).clone(), idx.select(1, 1).clone(), offsets};
}

// flat[index[i]] += values[i] for every i, in a fixed order under torch.use_deterministic_algorithms(True).
// The indices are valid by construction (checked on the host by the CPU ops, in the kernels by the
// CUDA ops), so index_put_'s own range check is skipped: on a GPU it reads them back to the host.
inline void accumulate_into(at::Tensor flat, const at::Tensor& index, const at::Tensor& values) {
  at::_index_put_impl_(flat, c10::List<std::optional<at::Tensor>>({index}), values, /*accumulate=*/true,
                       /*unsafe=*/true);
}

// Sum per-pair distance gradients (K, 4) into (N, P, 4): a point may sit in several bags.
inline at::Tensor scatter_pair_grads(const at::Tensor& pair_grad, const at::Tensor& distances,
                                     const at::Tensor& gt_image, const at::Tensor& pair_gt,
                                     const at::Tensor& pair_point) {
  const int64_t P = distances.size(1);
  auto grad = at::zeros(distances.sizes(), pair_grad.options());
  accumulate_into(grad.view({-1, 4}), gt_image.index_select(0, pair_gt) * P + pair_point, pair_grad);
  return grad.to(distances.scalar_type());
}

// Loss dtype of neg_loss: float64 for float64 logits, else float32 (a 16-bit sum would overflow).
inline at::ScalarType neg_loss_dtype(const at::Tensor& cls_logits) {
  return cls_logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The negative term's kernels read the logits class-major, (N, C, P) in memory with P contiguous
// (how the head's per-level outputs concatenate): SIMD lanes (CPU) and neighbouring threads (CUDA)
// then run over neighbouring points. Other layouts are copied into it once; 16-bit logits are
// computed in float. Returns an (N, P, C) view.
inline at::Tensor class_major(const at::Tensor& cls_logits) {
  const auto x = cls_logits.to(at::toOpMathType(cls_logits.scalar_type()));
  const int64_t P = x.size(1), C = x.size(2);
  if (x.stride(1) == 1 && x.stride(2) == P && x.stride(0) == P * C) return x;
  return x.transpose(1, 2).contiguous().transpose(1, 2);
}

// The gradient buffers neg_loss returns: class-major like its input, or empty without compute_grad.
inline std::tuple<at::Tensor, at::Tensor> neg_loss_grad_buffers(const at::Tensor& x, bool compute_grad) {
  const int64_t N = compute_grad ? x.size(0) : 0, P = x.size(1), C = x.size(2);
  return {at::empty({N, C, P}, x.options()).transpose(1, 2), at::empty({N, P}, x.options())};
}

}  // namespace dw_ops
