// CPU kernels of the dual weights and of the fused negative classification term.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
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

// Strided view of the (N, P, C) logits and the (N, P) centerness, indexed by row r = n * P + p.
template <typename scalar_t>
struct Logits {
  const scalar_t* cls;
  const scalar_t* ctr;
  int64_t P, C, cls_sn, cls_sp, cls_sc, ctr_sn, ctr_sp;
  Logits(const at::Tensor& c, const at::Tensor& t)
      : cls(c.data_ptr<scalar_t>()), ctr(t.data_ptr<scalar_t>()), P(c.size(1)), C(c.size(2)),
        cls_sn(c.stride(0)), cls_sp(c.stride(1)), cls_sc(c.stride(2)), ctr_sn(t.stride(0)), ctr_sp(t.stride(1)) {}
  int64_t cls_offset(int64_t row, int64_t k) const { return (row / P) * cls_sn + (row % P) * cls_sp + k * cls_sc; }
  int64_t ctr_offset(int64_t row) const { return (row / P) * ctr_sn + (row % P) * ctr_sp; }
};

at::Tensor neg_loss_cpu(const at::Tensor& cls_logits, const at::Tensor& ctr_logits, const at::Tensor& entry_index,
                        const at::Tensor& entry_weight_, double gamma_out, double gamma_in, double base_weight) {
  check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight_);
  const int64_t rows = cls_logits.size(0) * cls_logits.size(1), C = cls_logits.size(2);
  const int64_t U = entry_index.numel();
  const auto index = entry_index.contiguous();
  const auto weight = entry_weight_.to(at::kDouble).contiguous();
  double total = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cls_logits.scalar_type(), "neg_loss_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const Logits<scalar_t> lg(cls_logits, ctr_logits);
    const opmath_t g_out = gamma_out, g_in = gamma_in, base = base_weight;
    const double dense = at::parallel_reduce(0, rows, 64, 0.0, [&](int64_t begin, int64_t end, double acc) {
      for (int64_t r = begin; r < end; ++r) {
        const opmath_t sc = sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
        const scalar_t* x = lg.cls + lg.cls_offset(r, 0);
        opmath_t row = 0;
        for (int64_t k = 0; k < C; ++k) row += neg_term(sigmoid(opmath_t(x[k * lg.cls_sc])) * sc, g_out);
        acc += double(row) * double(base);
      }
      return acc;
    }, std::plus<double>());
    // The listed entries replace base * s^gamma_out by w * s^gamma_in.
    const int64_t* idx = index.data_ptr<int64_t>();
    const double* w = weight.data_ptr<double>();
    double correction = 0;
    for (int64_t e = 0; e < U; ++e) {
      const int64_t r = idx[e] / C, k = idx[e] % C;
      const opmath_t s = sigmoid(opmath_t(lg.cls[lg.cls_offset(r, k)])) * sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
      correction += w[e] * double(neg_term(s, g_in)) - double(base) * double(neg_term(s, g_out));
    }
    total = dense + correction;
  });
  return at::scalar_tensor(total, cls_logits.options().dtype(neg_loss_dtype(cls_logits)));
}

std::tuple<at::Tensor, at::Tensor> neg_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& cls_logits,
                                                         const at::Tensor& ctr_logits, const at::Tensor& entry_index,
                                                         const at::Tensor& entry_weight_, double gamma_out,
                                                         double gamma_in, double base_weight) {
  check_neg_loss(cls_logits, ctr_logits, entry_index, entry_weight_);
  TORCH_CHECK(grad.numel() == 1, "grad of neg_loss must be a scalar, got ", shape_str(grad));
  const int64_t rows = cls_logits.size(0) * cls_logits.size(1), C = cls_logits.size(2);
  const int64_t U = entry_index.numel();
  const auto index = entry_index.contiguous();
  const auto weight = entry_weight_.to(at::kDouble).contiguous();
  const double g = grad.item<double>();
  // grad_cls keeps the logits' memory layout; the centerness gradient is a sum over classes,
  // accumulated in opmath precision and cast once at the end.
  auto grad_cls = at::empty_like(cls_logits);
  auto grad_ctr_acc = at::empty(ctr_logits.sizes(), ctr_logits.options().dtype(at::toOpMathType(ctr_logits.scalar_type())));
  auto ctr_corr = at::empty({U}, grad_ctr_acc.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cls_logits.scalar_type(), "neg_loss_backward_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const Logits<scalar_t> lg(cls_logits, ctr_logits);
    scalar_t* gc = grad_cls.data_ptr<scalar_t>();
    opmath_t* gt = grad_ctr_acc.data_ptr<opmath_t>();
    const int64_t gt_sn = grad_ctr_acc.stride(0), gt_sp = grad_ctr_acc.stride(1);
    const opmath_t g_out = gamma_out, g_in = gamma_in, base = base_weight, go = g;
    // grad_cls shares the logits' strides (empty_like preserves a dense layout).
    const int64_t gsn = grad_cls.stride(0), gsp = grad_cls.stride(1), gsc = grad_cls.stride(2);
    const int64_t P = lg.P;
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const opmath_t sc = sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
        const scalar_t* x = lg.cls + lg.cls_offset(r, 0);
        scalar_t* gx = gc + (r / P) * gsn + (r % P) * gsp;
        opmath_t d_ctr = 0;
        for (int64_t k = 0; k < C; ++k) {
          const opmath_t sx = sigmoid(opmath_t(x[k * lg.cls_sc]));
          const opmath_t d_s = go * base * neg_term_grad(sx * sc, g_out);
          gx[k * gsc] = d_s * sc * sx * (opmath_t(1) - sx);
          d_ctr += d_s * sx;
        }
        gt[(r / P) * gt_sn + (r % P) * gt_sp] = d_ctr * sc * (opmath_t(1) - sc);
      }
    });
    const int64_t* idx = index.data_ptr<int64_t>();
    const double* w = weight.data_ptr<double>();
    opmath_t* cc = ctr_corr.data_ptr<opmath_t>();
    at::parallel_for(0, U, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t r = idx[e] / C, k = idx[e] % C;
        const opmath_t sc = sigmoid(opmath_t(lg.ctr[lg.ctr_offset(r)]));
        const opmath_t sx = sigmoid(opmath_t(lg.cls[lg.cls_offset(r, k)]));
        const opmath_t s = sx * sc;
        const opmath_t d_in = go * opmath_t(w[e]) * neg_term_grad(s, g_in);
        const opmath_t d_base = go * base * neg_term_grad(s, g_out);
        gc[(r / P) * gsn + (r % P) * gsp + k * gsc] = d_in * sc * sx * (opmath_t(1) - sx);
        cc[e] = (d_in - d_base) * sx * sc * (opmath_t(1) - sc);
      }
    });
  });
  grad_ctr_acc.view(-1).index_put_({entry_rows(index, C)}, ctr_corr, /*accumulate=*/true);
  return {grad_cls, grad_ctr_acc.to(ctr_logits.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CPU, m) {
  m.impl("dual_weights", &dual_weights_cpu);
  m.impl("neg_loss", &neg_loss_cpu);
  m.impl("_neg_loss_backward", &neg_loss_backward_cpu);
}

}  // namespace dw_ops
