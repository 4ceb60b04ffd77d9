// CUDA kernels of the candidate-bag ops (launched by bag_cuda.cu; run on the CPU by tests/cuda_emu).
#pragma once

#include "common/dw_math.h"
#include "cuda/device.cuh"

namespace dw_ops {
namespace kernels {

// Element i of the (M, P) inside mask is (GT i / P, point i % P).
template <typename scalar_t>
__global__ void inside_mask_kernel(const scalar_t* __restrict__ pts, const scalar_t* __restrict__ gts, int64_t M,
                                   int64_t P, bool* __restrict__ inside) {
  for (int64_t i = gpu::thread_index(); i < M * P; i += gpu::thread_count()) {
    const int64_t g = i / P, p = i % P;
    gpu::store(inside + i, math::strictly_inside(pts[2 * p], pts[2 * p + 1], gts + 4 * g));
  }
}

// Pair k's GT and point, and the GT's image, checked against M, P and N (the host does not read them).
__device__ inline bool valid_pair(const int64_t* img, int64_t g, int64_t p, int64_t M, int64_t P, int64_t N) {
  return DW_CHECK_INDEX(g >= 0 && g < M, "pair_gt must index rows of gt_boxes (a value is out of range)") &&
         DW_CHECK_INDEX(p >= 0 && p < P, "pair_point must index points (a value is out of range)") &&
         DW_CHECK_INDEX(img[g] >= 0 && img[g] < N, "gt_image must index images of distances (a value is out of range)");
}

// One thread per pair k = (GT pg[k], point pp[k]); the point's distances come from the GT's image.
template <typename scalar_t>
__global__ void bag_iou_kernel(const scalar_t* __restrict__ pts, const scalar_t* __restrict__ str,
                               const scalar_t* __restrict__ dist, const scalar_t* __restrict__ gts,
                               const int64_t* __restrict__ img, const int64_t* __restrict__ pg,
                               const int64_t* __restrict__ pp, int64_t K, int64_t P, int64_t M, int64_t N,
                               scalar_t sigma, bool hard_prior, scalar_t* __restrict__ out_prior,
                               scalar_t* __restrict__ out_iou, scalar_t* __restrict__ out_loss) {
  for (int64_t k = gpu::thread_index(); k < K; k += gpu::thread_count()) {
    const int64_t g = pg[k], p = pp[k];
    if (!valid_pair(img, g, p, M, P, N)) continue;
    const scalar_t x = pts[2 * p], y = pts[2 * p + 1];
    scalar_t box[4];
    math::decode_box(x, y, dist + 4 * (img[g] * P + p), box);
    const auto r = math::iou_terms(box, gts + 4 * g);
    gpu::store(out_prior + k, math::center_prior(x, y, str[p], gts + 4 * g, sigma, hard_prior));
    gpu::store(out_iou + k, r.iou);
    gpu::store(out_loss + k, scalar_t(1) - r.giou);
  }
}

// One thread per pair writes its own row of the (K, 4) gradient; scatter_pair_grads sums the rows.
template <typename scalar_t>
__global__ void bag_iou_backward_kernel(const scalar_t* __restrict__ pts, const scalar_t* __restrict__ dist,
                                        const scalar_t* __restrict__ gts, const int64_t* __restrict__ img,
                                        const int64_t* __restrict__ pg, const int64_t* __restrict__ pp,
                                        const scalar_t* __restrict__ grad, int64_t K, int64_t P, int64_t M,
                                        int64_t N, scalar_t* __restrict__ pair_grad) {
  for (int64_t k = gpu::thread_index(); k < K; k += gpu::thread_count()) {
    const int64_t g = pg[k], p = pp[k];
    if (!valid_pair(img, g, p, M, P, N)) continue;
    scalar_t box[4], d[4];
    math::decode_box(pts[2 * p], pts[2 * p + 1], dist + 4 * (img[g] * P + p), box);
    math::giou_loss_backward(box, gts + 4 * g, grad[k], d);
    for (int j = 0; j < 4; ++j) gpu::store(pair_grad + 4 * k + j, d[j]);
  }
}

}  // namespace kernels
}  // namespace dw_ops
