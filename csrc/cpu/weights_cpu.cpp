// CPU kernels of the dual weights and of the fused negative classification term.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <numeric>

#include "common/aten.h"
#include "common/checks.h"
#include "cpu/vec_math.h"
#include "common/dw_math.h"
#include "common/glue.h"

namespace dw_ops {
namespace {

using namespace math;

std::tuple<at::Tensor, at::Tensor> dual_weights_cpu(const at::Tensor& score_, const at::Tensor& iou_,
                                                    const at::Tensor& giou_loss_, const at::Tensor& prior_,
                                                    const at::Tensor& gt_pair_offsets_, int64_t pos_mode,
                                                    double beta, double mu_num, double mu_den, int64_t neg_mode,
                                                    double gamma1) {
  check_dual_weights(score_, iou_, giou_loss_, prior_, gt_pair_offsets_);
  check_dual_weights_values(score_, gt_pair_offsets_);
  const auto score = score_.contiguous(), iou = iou_.contiguous(), giou_loss = giou_loss_.contiguous();
  const auto prior = prior_.contiguous(), offsets = gt_pair_offsets_.contiguous();
  const int64_t M = offsets.numel() - 1;
  auto pos_weight = at::empty_like(score);
  auto neg_prob = at::empty_like(score);
  AT_DISPATCH_FLOATING_TYPES(score.scalar_type(), "dual_weights_cpu", [&] {
    const scalar_t* s = score.data_ptr<scalar_t>();
    const scalar_t* io = iou.data_ptr<scalar_t>();
    const scalar_t* gl = giou_loss.data_ptr<scalar_t>();
    const scalar_t* pr = prior.data_ptr<scalar_t>();
    const int64_t* o = offsets.data_ptr<int64_t>();
    scalar_t* wp = pos_weight.data_ptr<scalar_t>();
    scalar_t* pn = neg_prob.data_ptr<scalar_t>();
    const auto pmode = static_cast<PosMode>(pos_mode);
    const auto nmode = static_cast<NegMode>(neg_mode);
    const scalar_t b = beta, mn = mu_num, md = mu_den, g1 = gamma1;
    // One GT's bag per iteration: its normaliser and T(iou) range are segment reductions.
    at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        double den = 0;
        scalar_t t_lo = 0, t_hi = 0;
        for (int64_t k = o[g]; k < o[g + 1]; ++k) {
          const scalar_t t = consistency(pmode, s[k], io[k], gl[k], b);
          den += pos_weight_term(t, md, pr[k]);
          const scalar_t tr = neg_transfer(io[k]);
          t_lo = k == o[g] ? tr : min_(t_lo, tr);
          t_hi = k == o[g] ? tr : max_(t_hi, tr);
        }
        const scalar_t norm = max_(scalar_t(den), scalar_t(kPosEps));
        const scalar_t t2 = min_(scalar_t(1), t_hi);
        for (int64_t k = o[g]; k < o[g + 1]; ++k) {
          const scalar_t t = consistency(pmode, s[k], io[k], gl[k], b);
          wp[k] = pos_weight_term(t, mn, pr[k]) / norm;
          pn[k] = nmode == NegMode::kReleased ? released_neg_prob(io[k], t_lo, t2) : paper_neg_prob(io[k], g1);
        }
      }
    });
  });
  return {pos_weight, neg_prob};
}

// One SIMD step of the dense negative term over the scores x[0 .. V::size()) of one class, with
// sc = sigmoid(centerness) of their points: adds the terms to `sum`, writes the class-logit
// gradients and accumulates the centerness ones.
template <bool kGrad, typename V, typename scalar_t>
inline void neg_step(const scalar_t* x, const scalar_t* sc, scalar_t* grad_cls, scalar_t* d_ctr, double gamma,
                     scalar_t w, V& sum) {
  const auto r = neg_term_and_grads(V::loadu(x), V::loadu(sc), gamma, V(w));
  sum = sum + r.value;
  if constexpr (kGrad) {
    r.d_cls.store(grad_cls);
    (V::loadu(d_ctr) + r.d_ctr).store(d_ctr);
  }
}

template <typename V>
double lane_sum(const V& v) {
  alignas(64) typename V::value_type lanes[V::size()];
  v.store(lanes);
  return std::accumulate(lanes, lanes + V::size(), 0.0);
}

template <typename scalar_t, bool kGrad>
double neg_loss_dense(const scalar_t* x, const scalar_t* ctr, scalar_t* grad_cls, scalar_t* grad_ctr, int64_t N,
                      int64_t P, int64_t C, double gamma, double base) {
  using Vec = at::vec::Vectorized<scalar_t>;
  using Wide = at::vec::VectorizedN<scalar_t, 4>;  // see Prim<VectorizedN> for why four
  constexpr int64_t kBlock = 256;  // points per task; their sigmoid(ctr) and ctr gradients stay on the stack
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  const scalar_t w = base;
  return at::parallel_reduce(0, N * blocks, 1, 0.0, [&](int64_t begin, int64_t end, double acc) {
    alignas(64) scalar_t sc[kBlock], d_ctr[kBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kBlock, len = std::min(kBlock, P - p0);
      for (int64_t i = 0; i < len; ++i) {
        sc[i] = sigmoid(ctr[n * P + p0 + i]);
        d_ctr[i] = 0;
      }
      for (int64_t k = 0; k < C; ++k) {
        const int64_t row = (n * C + k) * P + p0;
        Wide wide_sum(0);
        Vec sum(0);
        int64_t i = 0;
        for (; i + Wide::size() <= len; i += Wide::size())
          neg_step<kGrad>(x + row + i, sc + i, grad_cls + row + i, d_ctr + i, gamma, w, wide_sum);
        for (; i + Vec::size() <= len; i += Vec::size())
          neg_step<kGrad>(x + row + i, sc + i, grad_cls + row + i, d_ctr + i, gamma, w, sum);
        for (; i < len; ++i) {
          const auto r = neg_term_and_grads(x[row + i], sc[i], gamma, w);
          acc += r.value;
          if constexpr (kGrad) {
            grad_cls[row + i] = r.d_cls;
            d_ctr[i] += r.d_ctr;
          }
        }
        acc += lane_sum(wide_sum) + lane_sum(sum);
      }
      if constexpr (kGrad) std::copy(d_ctr, d_ctr + len, grad_ctr + n * P + p0);
    }
    return acc;
  }, std::plus<double>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> neg_loss_cpu(const at::Tensor& cls_logits, const at::Tensor& ctr_logits,
                                                            const at::Tensor& entry_index,
                                                            const at::Tensor& entry_weight, double gamma_out,
                                                            double gamma_in, double base_weight, bool compute_grad) {
  check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight);
  check_neg_loss_values(cls_logits, entry_index);
  const int64_t N = cls_logits.size(0), P = cls_logits.size(1), C = cls_logits.size(2);
  const auto x = class_major(cls_logits);  // (N, P, C) view of (N, C, P) memory
  const auto ctr = ctr_logits.to(x.scalar_type()).contiguous();
  const auto index = entry_index.contiguous();
  const auto weight = entry_weight.to(at::kDouble).contiguous();
  at::Tensor grad_cls, grad_ctr;  // (no structured binding: lambdas capture them only from C++20)
  std::tie(grad_cls, grad_ctr) = neg_loss_grad_buffers(x, compute_grad);
  double total = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "neg_loss_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* cp = ctr.data_ptr<scalar_t>();
    scalar_t* gc = grad_cls.data_ptr<scalar_t>();
    scalar_t* gt = grad_ctr.data_ptr<scalar_t>();
    total = compute_grad ? neg_loss_dense<scalar_t, true>(xp, cp, gc, gt, N, P, C, gamma_out, base_weight)
                         : neg_loss_dense<scalar_t, false>(xp, cp, gc, gt, N, P, C, gamma_out, base_weight);
    // The listed entries replace base * s^gamma_out by w * s^gamma_in. They are sorted, so the
    // entries of one point are adjacent: each task takes whole points, and no two tasks add to
    // the same centerness gradient.
    const int64_t* idx = index.data_ptr<int64_t>();
    const double* w = weight.data_ptr<double>();
    const scalar_t g_in = gamma_in, g_out = gamma_out, base = base_weight;
    const int64_t U = index.numel();
    const auto point = [&](int64_t e) { return idx[e] / C; };  // n * P + p
    total += at::parallel_reduce(0, U, 1024, 0.0, [&](int64_t begin, int64_t end, double acc) {
      while (begin > 0 && begin < end && point(begin) == point(begin - 1)) ++begin;  // the previous task's
      if (begin == end) return acc;
      while (end < U && point(end) == point(end - 1)) ++end;
      for (int64_t e = begin; e < end; ++e) {
        const int64_t np = point(e), k = idx[e] - np * C, n = np / P;
        const int64_t off = (n * C + k) * P + (np - n * P);
        const scalar_t sc = sigmoid(cp[np]);
        const auto in = neg_term_and_grads(xp[off], sc, g_in, scalar_t(w[e]));
        const auto out = neg_term_and_grads(xp[off], sc, g_out, base);
        acc += double(in.value) - double(out.value);
        if (compute_grad) {
          gc[off] = in.d_cls;
          gt[np] += in.d_ctr - out.d_ctr;
        }
      }
      return acc;
    }, std::plus<double>());
  });
  const auto loss = at::scalar_tensor(total, cls_logits.options().dtype(neg_loss_dtype(cls_logits)));
  return {loss, grad_cls.to(cls_logits.scalar_type()), grad_ctr.to(ctr_logits.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CPU, m) {
  m.impl("dual_weights", &dual_weights_cpu);
  m.impl("neg_loss", &neg_loss_cpu);
}

}  // namespace dw_ops
