// CUDA kernels of the dual weights and of the fused negative classification term (loss and,
// with compute_grad, its gradients in the same pass).
// The math is dw_math.h's and the steps around the kernels glue.h's, as in cpu/weights_cpu.cpp.
// Every sum is a fixed-shape tree (block reductions, per-block partials summed by at::sum), so the
// results are deterministic run to run.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "common/checks.h"
#include "common/dw_math.h"
#include "common/glue.h"
#include "cuda/launch.cuh"

namespace dw_ops {
namespace {

using namespace math;
using gpu::blocks_for;
using gpu::kWarps;
using gpu::kWarpSize;
using gpu::launch;
using gpu::thread_count;
using gpu::thread_index;

// Blocks of the grid-wide reductions of neg_loss: a fixed cap (not one that depends on the GPU)
// keeps the summation order independent of the GPU model.
constexpr int64_t kReduceBlocks = 1024;

template <typename T, typename Op>
__device__ T warp_reduce(T v, Op op) {
  for (int d = kWarpSize / 2; d > 0; d /= 2) v = op(v, __shfl_down_sync(0xffffffffu, v, d));
  return v;
}

// Reduces v over a block of kThreads threads (as launch() starts them); every thread must call it
// and every thread gets the result. scratch: kWarps elements of shared memory, reusable by the next call.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_reduce(v, op);
  __syncthreads();  // a previous call's threads may still be reading scratch[0]
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) v = op(v, scratch[w]);
    scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

// ---- dual_weights ---------------------------------------------------------------------------------

// One block per GT g (pairs o[g] .. o[g + 1]): block reductions of the normaliser and of the
// T(iou) range, then each thread writes its pairs. A bag longer than the block is strided over.
template <typename scalar_t>
__global__ void dual_weights_kernel(const scalar_t* __restrict__ s, const scalar_t* __restrict__ io,
                                    const scalar_t* __restrict__ gl, const scalar_t* __restrict__ pr,
                                    const int64_t* __restrict__ o, int64_t M, PosMode pmode, NegMode nmode,
                                    scalar_t b, scalar_t mn, scalar_t md, scalar_t g1, scalar_t* __restrict__ wp,
                                    scalar_t* __restrict__ pn) {
  __shared__ double den_scratch[kWarps];
  __shared__ scalar_t lo_scratch[kWarps], hi_scratch[kWarps];
  // +-inf are identities of min_/max_ that keep their NaN propagation, so threads without pairs
  // do not change the result.
  constexpr scalar_t inf = std::numeric_limits<scalar_t>::infinity();
  const auto sum = [](double x, double y) { return x + y; };
  const auto lower = [](scalar_t x, scalar_t y) { return min_(x, y); };
  const auto upper = [](scalar_t x, scalar_t y) { return max_(x, y); };
  for (int64_t g = blockIdx.x; g < M; g += gridDim.x) {
    const int64_t begin = o[g], end = o[g + 1];
    if (begin == end) continue;  // an empty bag has nothing to write (uniform across the block)
    double den = 0;
    scalar_t t_lo = inf, t_hi = -inf;
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
      const scalar_t t = consistency(pmode, s[k], io[k], gl[k], b);
      den += pos_weight_term(t, md, pr[k]);
      const scalar_t tr = neg_transfer(io[k]);
      t_lo = min_(t_lo, tr);
      t_hi = max_(t_hi, tr);
    }
    den = block_reduce(den, sum, den_scratch);
    t_lo = block_reduce(t_lo, lower, lo_scratch);
    t_hi = block_reduce(t_hi, upper, hi_scratch);
    const scalar_t norm = max_(scalar_t(den), scalar_t(kPosEps));
    const scalar_t t2 = min_(scalar_t(1), t_hi);
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
      const scalar_t t = consistency(pmode, s[k], io[k], gl[k], b);
      wp[k] = pos_weight_term(t, mn, pr[k]) / norm;
      pn[k] = nmode == NegMode::kReleased ? released_neg_prob(io[k], t_lo, t2) : paper_neg_prob(io[k], g1);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> dual_weights_cuda(const at::Tensor& score_, const at::Tensor& iou_,
                                                     const at::Tensor& giou_loss_, const at::Tensor& prior_,
                                                     const at::Tensor& gt_pair_offsets_, int64_t pos_mode,
                                                     double beta, double mu_num, double mu_den, int64_t neg_mode,
                                                     double gamma1) {
  check_dual_weights(score_, iou_, giou_loss_, prior_, gt_pair_offsets_);
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
           prior.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), M, static_cast<PosMode>(pos_mode),
           static_cast<NegMode>(neg_mode), static_cast<scalar_t>(beta), static_cast<scalar_t>(mu_num),
           static_cast<scalar_t>(mu_den), static_cast<scalar_t>(gamma1), pos_weight.data_ptr<scalar_t>(),
           neg_prob.data_ptr<scalar_t>());
  });
  return {pos_weight, neg_prob};
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
  __shared__ double scratch[kWarps];
  double acc = 0;
  for (int64_t r = thread_index(); r < N * P; r += thread_count()) {
    const int64_t n = r / P, p = r % P;
    const scalar_t sc = sigmoid(ctr[r]);
    scalar_t d_ctr = 0;
    for (int64_t k = 0; k < C; ++k) {
      const int64_t off = (n * C + k) * P + p;
      const auto t = neg_term_and_grads(x[off], sc, gamma, base);
      acc += double(t.value);
      if (kGrad) {
        gc[off] = t.d_cls;
        d_ctr += t.d_ctr;
      }
    }
    if (kGrad) gt[r] = d_ctr;
  }
  acc = block_reduce(acc, [](double a, double b) { return a + b; }, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// The listed entries replace base * s^gamma_out by w * s^gamma_in: one thread per entry writes its
// loss correction and, when kGrad, overwrites its class gradient and writes its centerness correction.
template <typename scalar_t, bool kGrad>
__global__ void neg_loss_entry_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ ctr, int64_t P,
                                      int64_t C, const int64_t* __restrict__ idx, const double* __restrict__ w,
                                      int64_t U, scalar_t g_out, scalar_t g_in, scalar_t base,
                                      double* __restrict__ correction, scalar_t* __restrict__ gc,
                                      scalar_t* __restrict__ ctr_corr) {
  for (int64_t e = thread_index(); e < U; e += thread_count()) {
    const int64_t n = idx[e] / (P * C), p = idx[e] / C % P, k = idx[e] % C;
    const int64_t off = (n * C + k) * P + p;
    const scalar_t sc = sigmoid(ctr[n * P + p]);
    const auto in = neg_term_and_grads(x[off], sc, g_in, scalar_t(w[e]));
    const auto out = neg_term_and_grads(x[off], sc, g_out, base);
    correction[e] = double(in.value) - double(out.value);
    if (kGrad) {
      gc[off] = in.d_cls;
      ctr_corr[e] = in.d_ctr - out.d_ctr;
    }
  }
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
      launch(kernel, blocks_for(U), xp, cp, P, C, index.data_ptr<int64_t>(), weight.data_ptr<double>(), U, g_out,
             g_in, base, out + blocks, gc, ctr_corr.data_ptr<scalar_t>());
    }
  });
  if (compute_grad && U > 0) {  // entries of one point share its centerness gradient: deterministic sum
    grad_ctr.view(-1).index_put_({index.div(C, "floor")}, ctr_corr, /*accumulate=*/true);
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
