// Per-element math of the dw_ops kernels, written once for the CPU loops and the CUDA kernels.
//
// Every function here is `DW_HOST_DEVICE inline` and works on one element (one point-GT pair, one
// logit, one sample point). The CPU files and the .cu files only iterate and index; the numbers
// come from here, so the CPU tests exercise the exact arithmetic the GPU runs.
//
// The formulas mirror the released DW code (see docs/semantics.md): mmdet's aligned IoU/GIoU with
// eps = 1e-6 clamps, PyTorch's BCE (log clamped at -100, its own backward formula), and
// torchvision's deformable-convolution bilinear sampling. Gradients follow PyTorch's conventions
// at kinks (max/min ties split the gradient in half, clamp(min=0) passes it only above 0) so that
// our backward equals autograd on the dense reference.
#pragma once

#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>

// nvcc inlines device functions by itself; the host compiler, left to its heuristics, called
// bilinear() out of line inside OpenMP-outlined loops (two threads ran 2.3x slower than one), so insist.
#if defined(__CUDACC__)
#define DW_HOST_DEVICE C10_HOST_DEVICE
#elif defined(_MSC_VER)
#define DW_HOST_DEVICE __forceinline
#else
#define DW_HOST_DEVICE __attribute__((always_inline))
#endif

namespace dw_ops {
namespace math {

// max/min that propagate NaN like torch.maximum/minimum (std::max would silently drop it).
template <typename T>
DW_HOST_DEVICE inline T max_(T a, T b) {
  return (a != a || a > b) ? a : b;
}
template <typename T>
DW_HOST_DEVICE inline T min_(T a, T b) {
  return (a != a || a < b) ? a : b;
}

// d max(a, b) / d a as PyTorch's torch.maximum backward defines it (ties share the gradient).
template <typename T>
DW_HOST_DEVICE inline T dmax_da(T a, T b) {
  return a > b ? T(1) : (a == b ? T(0.5) : T(0));
}
template <typename T>
DW_HOST_DEVICE inline T dmin_da(T a, T b) {
  return a < b ? T(1) : (a == b ? T(0.5) : T(0));
}

// ---------------------------------------------------------------------------------------------
// Candidate bag and center prior
// ---------------------------------------------------------------------------------------------

// A point is in GT g's bag when it lies strictly inside the box: min(x - x1, y - y1, x2 - x,
// y2 - y) > 0, written as four comparisons so that the CPU loop vectorises (NaN is outside).
template <typename T>
DW_HOST_DEVICE inline bool strictly_inside(T x, T y, const T* box) {
  return (x - box[0] > T(0)) & (y - box[1] > T(0)) & (box[2] - x > T(0)) & (box[3] - y > T(0));
}

// Gaussian center prior exp(-dx^2/2s^2) exp(-dy^2/2s^2), distances in units of the point's stride.
// The hard variant keeps the points whose soft prior exceeds 0.3.
template <typename T>
DW_HOST_DEVICE inline T center_prior(T x, T y, T stride, const T* box, T sigma, bool hard) {
  const T dx = (x - (box[0] + box[2]) / T(2)) / stride;
  const T dy = (y - (box[1] + box[3]) / T(2)) / stride;
  const T two_var = T(2) * sigma * sigma;
  const T soft = std::exp(-(dx * dx) / two_var) * std::exp(-(dy * dy) / two_var);
  if (hard) return soft > T(0.3) ? T(1) : T(0);
  return soft;
}

// ---------------------------------------------------------------------------------------------
// IoU and GIoU loss of the box a point predicts, against one GT (mmdet's aligned bbox_overlaps)
// ---------------------------------------------------------------------------------------------

constexpr double kBoxEps = 1e-6;

// Predicted box (x - l, y - t, x + r, y + b) from the distances (l, t, r, b).
template <typename T>
DW_HOST_DEVICE inline void decode_box(T x, T y, const T* dist, T* box) {
  box[0] = x - dist[0];
  box[1] = y - dist[1];
  box[2] = x + dist[2];
  box[3] = y + dist[3];
}

template <typename T>
struct IouTerms {
  T w, h;          // overlap width/height after clamp(min=0); raw values below
  T w_raw, h_raw;
  T overlap;
  T union_raw, union_;  // union before / after max(., eps)
  T ew, eh, ew_raw, eh_raw;
  T enclose_raw, enclose;
  T iou, giou;
};

template <typename T>
DW_HOST_DEVICE inline IouTerms<T> iou_terms(const T* p, const T* g) {
  IouTerms<T> r;
  const T eps = T(kBoxEps);
  const T area_p = (p[2] - p[0]) * (p[3] - p[1]);
  const T area_g = (g[2] - g[0]) * (g[3] - g[1]);
  r.w_raw = min_(p[2], g[2]) - max_(p[0], g[0]);
  r.h_raw = min_(p[3], g[3]) - max_(p[1], g[1]);
  r.w = max_(r.w_raw, T(0));
  r.h = max_(r.h_raw, T(0));
  r.overlap = r.w * r.h;
  r.union_raw = area_p + area_g - r.overlap;
  r.union_ = max_(r.union_raw, eps);
  r.iou = r.overlap / r.union_;
  r.ew_raw = max_(p[2], g[2]) - min_(p[0], g[0]);
  r.eh_raw = max_(p[3], g[3]) - min_(p[1], g[1]);
  r.ew = max_(r.ew_raw, T(0));
  r.eh = max_(r.eh_raw, T(0));
  r.enclose_raw = r.ew * r.eh;
  r.enclose = max_(r.enclose_raw, eps);
  r.giou = r.iou - (r.enclose - r.union_) / r.enclose;
  return r;
}

// Gradient of (1 - GIoU) w.r.t. the predicted distances (l, t, r, b), times `grad`.
template <typename T>
DW_HOST_DEVICE inline void giou_loss_backward(const T* p, const T* g, T grad, T* grad_dist) {
  const T eps = T(kBoxEps);
  const IouTerms<T> r = iou_terms(p, g);
  const T d_giou = -grad;
  // giou = overlap / union - (enclose - union) / enclose
  const T d_union = d_giou * (-r.overlap / (r.union_ * r.union_) + T(1) / r.enclose);
  const T d_enclose = d_giou * (-r.union_ / (r.enclose * r.enclose));
  const T d_union_raw = d_union * dmax_da(r.union_raw, eps);
  const T d_enclose_raw = d_enclose * dmax_da(r.enclose_raw, eps);
  // union_raw = area_p + area_g - overlap
  const T d_overlap = d_giou / r.union_ - d_union_raw;
  const T d_area_p = d_union_raw;
  // clamp(min=0) passes the gradient only where its input is above 0 (PyTorch's convention).
  const T d_w = r.w_raw > T(0) ? d_overlap * r.h : T(0);
  const T d_h = r.h_raw > T(0) ? d_overlap * r.w : T(0);
  const T d_ew = r.ew_raw > T(0) ? d_enclose_raw * r.eh : T(0);
  const T d_eh = r.eh_raw > T(0) ? d_enclose_raw * r.ew : T(0);
  const T pw = p[2] - p[0], ph = p[3] - p[1];
  // w = min(p2, g2) - max(p0, g0); ew = max(p2, g2) - min(p0, g0); same for y.
  const T d_p0 = -d_area_p * ph - d_w * dmax_da(p[0], g[0]) - d_ew * dmin_da(p[0], g[0]);
  const T d_p2 = d_area_p * ph + d_w * dmin_da(p[2], g[2]) + d_ew * dmax_da(p[2], g[2]);
  const T d_p1 = -d_area_p * pw - d_h * dmax_da(p[1], g[1]) - d_eh * dmin_da(p[1], g[1]);
  const T d_p3 = d_area_p * pw + d_h * dmin_da(p[3], g[3]) + d_eh * dmax_da(p[3], g[3]);
  // p = (x - l, y - t, x + r, y + b)
  grad_dist[0] = -d_p0;
  grad_dist[1] = -d_p1;
  grad_dist[2] = d_p2;
  grad_dist[3] = d_p3;
}

// ---------------------------------------------------------------------------------------------
// Dual weights (detached)
// ---------------------------------------------------------------------------------------------

enum class PosMode : int64_t { kReleased = 0, kPaper = 1 };
enum class NegMode : int64_t { kReleased = 0, kPaper = 1 };

// Consistency t of a pair. Released: t = s * exp(-beta * (1 - GIoU)); paper (eq. 3): t = s * IoU^beta.
template <typename T>
DW_HOST_DEVICE inline T consistency(PosMode mode, T score, T iou, T giou_loss, T beta) {
  if (mode == PosMode::kReleased) return score * std::exp(-beta * giou_loss);
  return score * std::pow(iou, beta);
}

// Un-normalised positive weight e^{mu t} * t * prior (eq. 4 times the soft center prior).
template <typename T>
DW_HOST_DEVICE inline T pos_weight_term(T t, T mu, T prior) {
  return std::exp(mu * t) * t * prior;
}

constexpr double kPosEps = 1e-12;  // floor of the per-GT normaliser
constexpr double kNegEps = 1e-12;  // min-max normalisation guard of the released P_neg

// Released P_neg transfer T(x) = (1 - x^2) / 0.75, through (0.5, 1) and (1, 0).
template <typename T>
DW_HOST_DEVICE inline T neg_transfer(T iou) {
  return (T(1) - iou * iou) / T(0.75);
}

// Released P_neg of one pair, given the per-GT min t1 and clipped max t2 of T(iou) over its bag.
template <typename T>
DW_HOST_DEVICE inline T released_neg_prob(T iou, T t1, T t2) {
  if (iou < T(0.5)) return T(1);
  return (neg_transfer(iou) - t1 + T(kNegEps)) / (t2 - t1 + T(kNegEps));
}

// Paper P_neg (eqs. 5-6): 1 below IoU 0.5, 0 above 0.95, -k IoU^gamma1 + b in between, the curve
// passing through (0.5, 1) and (0.95, 0).
template <typename T>
DW_HOST_DEVICE inline T paper_neg_prob(T iou, T gamma1) {
  if (iou < T(0.5)) return T(1);
  if (iou > T(0.95)) return T(0);
  const T lo = std::pow(T(0.5), gamma1), hi = std::pow(T(0.95), gamma1);
  const T k = T(1) / (hi - lo);
  const T b = T(1) + k * lo;
  return -k * std::pow(iou, gamma1) + b;
}

// ---------------------------------------------------------------------------------------------
// Negative classification term  w * s^gamma * BCE(s, 0),  s = sigmoid(cls) * sigmoid(ctr)
//
// Written once for scalars (float/double, host and device) and for CPU SIMD vectors: the
// transcendental functions go through Prim<T>, which csrc/cpu/vec_math.h specialises for
// at::vec::Vectorized. `gamma` stays a scalar (it is uniform over a launch).
// ---------------------------------------------------------------------------------------------

template <typename T>
struct Prim {
  static DW_HOST_DEVICE inline T exp(T x) { return std::exp(x); }
  static DW_HOST_DEVICE inline T log1p(T x) { return std::log1p(x); }
  static DW_HOST_DEVICE inline T pow(T x, T y) { return std::pow(x, y); }
  static DW_HOST_DEVICE inline T max(T a, T b) { return max_(a, b); }
};

template <typename T>
DW_HOST_DEVICE inline T sigmoid(T x) {
  return T(1) / (T(1) + Prim<T>::exp(T(0) - x));  // (0 - x: ATen's VectorizedN has no unary minus)
}

// PyTorch's binary_cross_entropy against target 0: -max(log1p(-s), -100) (NaN propagates).
template <typename T>
DW_HOST_DEVICE inline T bce_zero(T s) {
  return T(0) - Prim<T>::max(Prim<T>::log1p(T(0) - s), T(-100));
}

// Its derivative as PyTorch's backward computes it: s / max((1 - s) s, 1e-12).
template <typename T>
DW_HOST_DEVICE inline T bce_zero_grad(T s) {
  return s / Prim<T>::max((T(1) - s) * s, T(1e-12));
}

// s^gamma, and its derivative with torch.pow's convention d/ds s^0 = 0.
template <typename T, typename G>
DW_HOST_DEVICE inline T pow_gamma(T s, G gamma) {
  if (gamma == G(2)) return s * s;
  if (gamma == G(0)) return T(1);
  return Prim<T>::pow(s, T(gamma));
}
template <typename T, typename G>
DW_HOST_DEVICE inline T pow_gamma_grad(T s, G gamma) {
  if (gamma == G(2)) return T(2) * s;
  if (gamma == G(0)) return T(0);
  return T(gamma) * Prim<T>::pow(s, T(gamma - G(1)));
}

template <typename T, typename G>
DW_HOST_DEVICE inline T neg_term(T s, G gamma) {
  return pow_gamma(s, gamma) * bce_zero(s);
}

// d neg_term / d s
template <typename T, typename G>
DW_HOST_DEVICE inline T neg_term_grad(T s, G gamma) {
  return pow_gamma_grad(s, gamma) * bce_zero(s) + pow_gamma(s, gamma) * bce_zero_grad(s);
}

// One score of the negative term: value and gradients w.r.t. the class logit x and the
// centerness logit c (given sc = sigmoid(c)), all scaled by `weight`.
template <typename T>
struct NegGrad {
  T value, d_cls, d_ctr;
};

template <typename T, typename G>
DW_HOST_DEVICE inline NegGrad<T> neg_term_and_grads(T x, T sc, G gamma, T weight) {
  const T sx = sigmoid(x);
  const T s = sx * sc;
  const T d_s = weight * neg_term_grad(s, gamma);
  return {weight * neg_term(s, gamma), d_s * sc * sx * (T(1) - sx), d_s * sx * sc * (T(1) - sc)};
}

// ---------------------------------------------------------------------------------------------
// Bilinear sampling with deformable-convolution semantics (torchvision's deform_conv2d)
// ---------------------------------------------------------------------------------------------

// The four corners around (y, x) and their weights; corners off the map have idx = -1 and are
// skipped (they contribute 0). A sample with y <= -1, y >= H, x <= -1 or x >= W has no corner.
template <typename T>
struct Bilinear {
  int64_t idx[4];  // flat y * W + x, or -1
  T wt[4];
  T dwt_dy[4];  // d weight / d y for each corner (valid corners only)
  T dwt_dx[4];
};

template <typename T>
DW_HOST_DEVICE inline Bilinear<T> bilinear(T y, T x, int64_t H, int64_t W) {
  Bilinear<T> b;
  for (int i = 0; i < 4; ++i) {
    b.idx[i] = -1;
    b.wt[i] = T(0);
    b.dwt_dy[i] = T(0);
    b.dwt_dx[i] = T(0);
  }
  if (y != y || x != x) {  // a NaN sample point propagates NaN (through corner 0) instead of vanishing
    b.idx[0] = 0;
    b.wt[0] = b.dwt_dy[0] = b.dwt_dx[0] = y + x;
    return b;
  }
  if (!(y > T(-1) && y < T(H) && x > T(-1) && x < T(W))) return b;
  const T yf = std::floor(y), xf = std::floor(x);
  const int64_t y0 = static_cast<int64_t>(yf), x0 = static_cast<int64_t>(xf);
  const T ly = y - yf, lx = x - xf;
  const T hy = T(1) - ly, hx = T(1) - lx;
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const T wts[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const T dys[4] = {-hx, -lx, hx, lx};
  const T dxs[4] = {-hy, hy, -ly, ly};
  for (int i = 0; i < 4; ++i) {
    if (ys[i] >= 0 && ys[i] < H && xs[i] >= 0 && xs[i] < W) {
      b.idx[i] = ys[i] * W + xs[i];
      b.wt[i] = wts[i];
      b.dwt_dy[i] = dys[i];
      b.dwt_dx[i] = dxs[i];
    }
  }
  return b;
}

// Whether all four corners are on the map (then the loops need no per-corner test): corner 0 is
// the top-left one and corner 3 the bottom-right one.
template <typename T>
DW_HOST_DEVICE inline bool all_corners_on_map(const Bilinear<T>& b) {
  return b.idx[0] >= 0 && b.idx[3] >= 0;
}

}  // namespace math
}  // namespace dw_ops
