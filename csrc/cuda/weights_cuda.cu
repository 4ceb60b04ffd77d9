// CUDA kernels of the dual weights and of the fused negative classification term.
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

// Strided view of the (N, P, C) logits and the (N, P) centerness, indexed by row r = n * P + p.
template <typename scalar_t>
struct Logits {
  const scalar_t* cls;
  const scalar_t* ctr;
  int64_t P, C, cls_sn, cls_sp, cls_sc, ctr_sn, ctr_sp;
  __device__ int64_t cls_offset(int64_t row, int64_t k) const {
    return (row / P) * cls_sn + (row % P) * cls_sp + k * cls_sc;
  }
  __device__ int64_t ctr_offset(int64_t row) const { return (row / P) * ctr_sn + (row % P) * ctr_sp; }
};

template <typename scalar_t>
Logits<scalar_t> logits_view(const at::Tensor& cls, const at::Tensor& ctr) {
  return {cls.data_ptr<scalar_t>(), ctr.data_ptr<scalar_t>(), cls.size(1), cls.size(2), cls.stride(0),
          cls.stride(1), cls.stride(2), ctr.stride(0), ctr.stride(1)};
}

// Dense term over all N * P * C entries: one double partial sum per block.
template <typename scalar_t, typename opmath_t>
__global__ void neg_loss_dense_kernel(Logits<scalar_t> lg, int64_t entries, opmath_t g_out, double base,
                                      double* __restrict__ partial) {
  __shared__ double scratch[kWarps];
  double acc = 0;
  for (int64_t i = thread_index(); i < entries; i += thread_count()) {
    const int64_t r = i / lg.C, k = i % lg.C;
    const opmath_t sc = sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
    acc += double(neg_term(sigmoid(opmath_t(lg.cls[lg.cls_offset(r, k)])) * sc, g_out));
  }
  acc = block_reduce(acc, [](double x, double y) { return x + y; }, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc * base;
}

// The listed entries replace base * s^gamma_out by w * s^gamma_in: one correction per entry.
template <typename scalar_t, typename opmath_t>
__global__ void neg_loss_entry_kernel(Logits<scalar_t> lg, const int64_t* __restrict__ idx,
                                      const double* __restrict__ w, int64_t U, opmath_t g_out, opmath_t g_in,
                                      double base, double* __restrict__ correction) {
  for (int64_t e = thread_index(); e < U; e += thread_count()) {
    const int64_t r = idx[e] / lg.C, k = idx[e] % lg.C;
    const opmath_t s = sigmoid(opmath_t(lg.cls[lg.cls_offset(r, k)])) * sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
    correction[e] = w[e] * double(neg_term(s, g_in)) - base * double(neg_term(s, g_out));
  }
}

at::Tensor neg_loss_cuda(const at::Tensor& cls_logits, const at::Tensor& ctr_logits, const at::Tensor& entry_index,
                         const at::Tensor& entry_weight_, double gamma_out, double gamma_in, double base_weight) {
  check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight_);
  const c10::cuda::CUDAGuard guard(cls_logits.device());
  const int64_t entries = cls_logits.numel();
  const int64_t U = entry_index.numel();
  const auto index = entry_index.contiguous();
  const auto weight = entry_weight_.to(at::kDouble).contiguous();
  // terms = [one partial per block of the dense sum, one correction per listed entry]; at::sum
  // adds them in a fixed order. No entries and no blocks give a zero loss.
  const int64_t blocks = entries > 0 ? blocks_for(entries, kReduceBlocks) : 0;
  auto terms = at::empty({blocks + U}, cls_logits.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cls_logits.scalar_type(), "neg_loss_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto lg = logits_view<scalar_t>(cls_logits, ctr_logits);
    const opmath_t g_out = gamma_out, g_in = gamma_in;
    const double base = opmath_t(base_weight);  // the CPU's precision of the weight
    double* out = terms.data_ptr<double>();
    if (blocks > 0) {
      launch(neg_loss_dense_kernel<scalar_t, opmath_t>, static_cast<unsigned int>(blocks), lg, entries, g_out, base,
             out);
    }
    if (U > 0) {
      launch(neg_loss_entry_kernel<scalar_t, opmath_t>, blocks_for(U), lg, index.data_ptr<int64_t>(),
             weight.data_ptr<double>(), U, g_out, g_in, base, out + blocks);
    }
  });
  return terms.sum().to(neg_loss_dtype(cls_logits));
}

// One warp per row (n, p): the lanes stride over the C classes writing grad_cls, then the warp sums
// the row's centerness gradient.
template <typename scalar_t, typename opmath_t>
__global__ void neg_loss_rows_backward_kernel(Logits<scalar_t> lg, int64_t rows, const opmath_t* __restrict__ grad,
                                              opmath_t g_out, opmath_t base, scalar_t* __restrict__ gc, int64_t gsn,
                                              int64_t gsp, int64_t gsc, opmath_t* __restrict__ grad_ctr) {
  const opmath_t go = *grad;
  const int lane = threadIdx.x % kWarpSize;
  // The row is the same for the whole warp, so the shuffles below see all 32 lanes.
  for (int64_t r = thread_index() / kWarpSize; r < rows; r += thread_count() / kWarpSize) {
    const opmath_t sc = sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
    const scalar_t* x = lg.cls + lg.cls_offset(r, 0);
    scalar_t* gx = gc + (r / lg.P) * gsn + (r % lg.P) * gsp;
    opmath_t d_ctr = 0;
    for (int64_t k = lane; k < lg.C; k += kWarpSize) {
      const opmath_t sx = sigmoid(opmath_t(x[k * lg.cls_sc]));
      const opmath_t d_s = go * base * neg_term_grad(sx * sc, g_out);
      gx[k * gsc] = d_s * sc * sx * (opmath_t(1) - sx);
      d_ctr += d_s * sx;
    }
    d_ctr = warp_reduce(d_ctr, [](opmath_t x, opmath_t y) { return x + y; });
    if (lane == 0) grad_ctr[r] = d_ctr * sc * (opmath_t(1) - sc);
  }
}

// One thread per listed entry: overwrites its grad_cls value and writes its centerness correction.
template <typename scalar_t, typename opmath_t>
__global__ void neg_loss_entry_backward_kernel(Logits<scalar_t> lg, const int64_t* __restrict__ idx,
                                               const double* __restrict__ w, int64_t U,
                                               const opmath_t* __restrict__ grad, opmath_t g_out, opmath_t g_in,
                                               opmath_t base, scalar_t* __restrict__ gc, int64_t gsn, int64_t gsp,
                                               int64_t gsc, opmath_t* __restrict__ ctr_corr) {
  const opmath_t go = *grad;
  for (int64_t e = thread_index(); e < U; e += thread_count()) {
    const int64_t r = idx[e] / lg.C, k = idx[e] % lg.C;
    const opmath_t sc = sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
    const opmath_t sx = sigmoid(opmath_t(lg.cls[lg.cls_offset(r, k)]));
    const opmath_t s = sx * sc;
    const opmath_t d_in = go * opmath_t(w[e]) * neg_term_grad(s, g_in);
    const opmath_t d_base = go * base * neg_term_grad(s, g_out);
    gc[(r / lg.P) * gsn + (r % lg.P) * gsp + k * gsc] = d_in * sc * sx * (opmath_t(1) - sx);
    ctr_corr[e] = (d_in - d_base) * sx * sc * (opmath_t(1) - sc);
  }
}

std::tuple<at::Tensor, at::Tensor> neg_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& cls_logits,
                                                          const at::Tensor& ctr_logits, const at::Tensor& entry_index,
                                                          const at::Tensor& entry_weight_, double gamma_out,
                                                          double gamma_in, double base_weight) {
  check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight_);
  TORCH_CHECK(grad.numel() == 1, "grad of neg_loss must be a scalar, got ", shape_str(grad));
  const c10::cuda::CUDAGuard guard(cls_logits.device());
  const int64_t rows = cls_logits.size(0) * cls_logits.size(1), C = cls_logits.size(2);
  const int64_t U = entry_index.numel();
  const auto index = entry_index.contiguous();
  const auto weight = entry_weight_.to(at::kDouble).contiguous();
  const auto opmath_type = at::toOpMathType(cls_logits.scalar_type());
  // The kernels read the scalar grad from device memory: no host synchronisation.
  const auto grad_op = grad.reshape({}).to(cls_logits.device(), opmath_type);
  // grad_cls keeps the logits' memory layout; the centerness gradient is a sum over classes,
  // accumulated in opmath precision (contiguous, indexed by row) and cast once at the end.
  auto grad_cls = at::empty_like(cls_logits);
  auto grad_ctr_acc = at::empty(ctr_logits.sizes(), ctr_logits.options().dtype(opmath_type));
  auto ctr_corr = at::empty({U}, grad_ctr_acc.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cls_logits.scalar_type(), "neg_loss_backward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto lg = logits_view<scalar_t>(cls_logits, ctr_logits);
    const opmath_t g_out = gamma_out, g_in = gamma_in, base = base_weight;
    const opmath_t* go = grad_op.data_ptr<opmath_t>();
    scalar_t* gc = grad_cls.data_ptr<scalar_t>();
    const int64_t gsn = grad_cls.stride(0), gsp = grad_cls.stride(1), gsc = grad_cls.stride(2);
    if (rows > 0) {
      launch(neg_loss_rows_backward_kernel<scalar_t, opmath_t>, blocks_for(rows * kWarpSize), lg, rows, go, g_out,
             base, gc, gsn, gsp, gsc, grad_ctr_acc.data_ptr<opmath_t>());
    }
    if (U > 0) {
      launch(neg_loss_entry_backward_kernel<scalar_t, opmath_t>, blocks_for(U), lg, index.data_ptr<int64_t>(),
             weight.data_ptr<double>(), U, go, g_out, g_in, base, gc, gsn, gsp, gsc, ctr_corr.data_ptr<opmath_t>());
    }
  });
  grad_ctr_acc.view(-1).index_put_({entry_rows(index, C)}, ctr_corr, /*accumulate=*/true);
  return {grad_cls, grad_ctr_acc.to(ctr_logits.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CUDA, m) {
  m.impl("dual_weights", &dual_weights_cuda);
  m.impl("neg_loss", &neg_loss_cuda);
  m.impl("_neg_loss_backward", &neg_loss_backward_cuda);
}

}  // namespace dw_ops
