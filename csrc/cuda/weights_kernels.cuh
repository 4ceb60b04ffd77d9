// CUDA kernels of the dual weights and of the fused negative classification term (launched by
// weights_cuda.cu; run on the CPU by tests/cuda_emu).
#pragma once

#include <limits>

#include "common/dw_math.h"
#include "cuda/device.cuh"

namespace dw_ops {
namespace kernels {

// ---- dual_weights ---------------------------------------------------------------------------------

// One block per GT g (pairs o[g] .. o[g + 1] of K): block reductions of the normaliser and of the
// T(iou) range, then each thread writes its pairs. A bag longer than the block is strided over.
template <typename scalar_t>
__global__ void dual_weights_kernel(const scalar_t* __restrict__ s, const scalar_t* __restrict__ io,
                                    const scalar_t* __restrict__ gl, const scalar_t* __restrict__ pr,
                                    const int64_t* __restrict__ o, int64_t M, int64_t K, math::PosMode pmode,
                                    math::NegMode nmode, scalar_t b, scalar_t mn, scalar_t md, scalar_t g1,
                                    scalar_t* __restrict__ wp, scalar_t* __restrict__ pn) {
  using namespace math;
  __shared__ double den_scratch[gpu::kWarps];
  __shared__ scalar_t lo_scratch[gpu::kWarps], hi_scratch[gpu::kWarps];
  // +-inf are identities of min_/max_ that keep their NaN propagation, so threads without pairs
  // do not change the result.
  constexpr scalar_t inf = std::numeric_limits<scalar_t>::infinity();
  const auto sum = [](double x, double y) { return x + y; };
  const auto lower = [](scalar_t x, scalar_t y) { return min_(x, y); };
  const auto upper = [](scalar_t x, scalar_t y) { return max_(x, y); };
  for (int64_t g = blockIdx.x; g < M; g += gridDim.x) {
    const int64_t begin = o[g], end = o[g + 1];
    // The checks depend on g only, so the whole block skips a bad bag (block_reduce needs them all).
    const bool ok =
        DW_CHECK_INDEX(g > 0 || begin == 0, "gt_pair_offsets must start at 0") &&
        DW_CHECK_INDEX(g < M - 1 || end == K, "gt_pair_offsets must end at K (the number of pairs)") &&
        DW_CHECK_INDEX(begin <= end && begin >= 0 && end <= K, "gt_pair_offsets must be non-decreasing within [0, K]");
    if (!ok || begin == end) continue;  // an empty bag has nothing to write
    double den = 0;
    scalar_t t_lo = inf, t_hi = -inf;
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
      const scalar_t t = consistency(pmode, s[k], io[k], gl[k], b);
      den += pos_weight_term(t, md, pr[k]);
      const scalar_t tr = neg_transfer(io[k]);
      t_lo = min_(t_lo, tr);
      t_hi = max_(t_hi, tr);
    }
    den = gpu::block_reduce(den, sum, den_scratch);
    t_lo = gpu::block_reduce(t_lo, lower, lo_scratch);
    t_hi = gpu::block_reduce(t_hi, upper, hi_scratch);
    const scalar_t norm = max_(scalar_t(den), scalar_t(kPosEps));
    const scalar_t t2 = min_(scalar_t(1), t_hi);
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
      const scalar_t t = consistency(pmode, s[k], io[k], gl[k], b);
      gpu::store(wp + k, pos_weight_term(t, mn, pr[k]) / norm);
      gpu::store(pn + k, nmode == NegMode::kReleased ? released_neg_prob(io[k], t_lo, t2) : paper_neg_prob(io[k], g1));
    }
  }
}

// ---- neg_loss -------------------------------------------------------------------------------------

// One thread per point row (n, p) of the class-major (N, C, P) logits: it loops over the C classes
// (neighbouring threads read neighbouring points: coalesced), keeps sigmoid(ctr) and the
// centerness gradient in registers, and writes the class gradients when kGrad. The loss leaves as
// one double partial per block.
template <typename scalar_t, bool kGrad>
__global__ void neg_loss_dense_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ ctr, int64_t N,
                                      int64_t P, int64_t C, scalar_t gamma, scalar_t base, scalar_t* __restrict__ gc,
                                      scalar_t* __restrict__ gt, double* __restrict__ partial) {
  __shared__ double scratch[gpu::kWarps];
  double acc = 0;
  for (int64_t r = gpu::thread_index(); r < N * P; r += gpu::thread_count()) {
    const int64_t n = r / P, p = r % P;
    const scalar_t sc = math::sigmoid(ctr[r]);
    scalar_t d_ctr = 0;
    for (int64_t k = 0; k < C; ++k) {
      const int64_t off = (n * C + k) * P + p;
      const auto t = math::neg_term_and_grads(x[off], sc, gamma, base);
      acc += double(t.value);
      if (kGrad) {
        gpu::store(gc + off, t.d_cls);
        d_ctr += t.d_ctr;
      }
    }
    if (kGrad) gpu::store(gt + r, d_ctr);
  }
  acc = gpu::block_reduce(acc, [](double a, double b) { return a + b; }, scratch);
  if (threadIdx.x == 0) gpu::store(partial + blockIdx.x, acc);
}

// The listed entries (strictly increasing flat (n * P + p) * C + k indices, U of them) replace
// base * s^gamma_out by w * s^gamma_in: one thread per entry writes its loss correction and, when
// kGrad, overwrites its class gradient and writes its centerness correction.
template <typename scalar_t, bool kGrad>
__global__ void neg_loss_entry_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ ctr, int64_t N,
                                      int64_t P, int64_t C, const int64_t* __restrict__ idx,
                                      const double* __restrict__ w, int64_t U, scalar_t g_out, scalar_t g_in,
                                      scalar_t base, double* __restrict__ correction, scalar_t* __restrict__ gc,
                                      scalar_t* __restrict__ ctr_corr) {
  for (int64_t e = gpu::thread_index(); e < U; e += gpu::thread_count()) {
    // A repeated entry would be corrected twice in the loss but once in the gradient.
    if (!DW_CHECK_INDEX(idx[e] >= 0 && idx[e] < N * P * C,
                        "entry_index must index flat (N * P * C) entries of cls_logits (a value is out of range)") ||
        !DW_CHECK_INDEX(e == 0 || idx[e] > idx[e - 1],
                        "entry_index must be strictly increasing (unique sorted entries, as dw_ops.merge_entries "
                        "returns)"))
      continue;
    const int64_t n = idx[e] / (P * C), p = idx[e] / C % P, k = idx[e] % C;
    const int64_t off = (n * C + k) * P + p;
    const scalar_t sc = math::sigmoid(ctr[n * P + p]);
    const auto in = math::neg_term_and_grads(x[off], sc, g_in, scalar_t(w[e]));
    const auto out = math::neg_term_and_grads(x[off], sc, g_out, base);
    gpu::store(correction + e, double(in.value) - double(out.value));
    if (kGrad) {
      gpu::store(gc + off, in.d_cls);
      gpu::store(ctr_corr + e, in.d_ctr - out.d_ctr);
    }
  }
}

}  // namespace kernels
}  // namespace dw_ops
