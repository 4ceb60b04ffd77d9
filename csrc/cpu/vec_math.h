// SIMD instantiation of the shared math: Prim<T> for at::vec::Vectorized, so that the formulas of
// common/dw_math.h run 8 (float) or 4 (double) scores at a time on AVX2 CPUs, and for
// at::vec::VectorizedN, N such vectors at a time. With no SIMD capability compiled in, Vectorized
// falls back to element loops and the results are the same.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include "common/dw_math.h"

namespace dw_ops {
namespace math {

template <typename S>
struct Prim<at::vec::Vectorized<S>> {
  using V = at::vec::Vectorized<S>;
  static inline V exp(V x) { return x.exp(); }
  static inline V log1p(V x) { return x.log1p(); }
  static inline V pow(V x, V y) { return x.pow(y); }
  static inline V max(V a, V b) { return at::vec::maximum(a, b); }  // propagates NaN
};

#if defined(CPU_CAPABILITY_AVX2) && !defined(_MSC_VER)
// log(u) of 8 floats, inline: Cephes' logf (mantissa in [sqrt(1/2), sqrt(2)), degree-8 polynomial),
// about 1 ulp. Exact at u = 1, -inf at 0, NaN below 0 and for NaN, inf at inf. Denormal u is read as
// if its exponent were -126 (the negative term never meets one: see log1p below).
inline __m256 log_avx2(__m256 u) {
  const __m256i bits = _mm256_castps_si256(u);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  __m256 m = _mm256_or_ps(_mm256_and_ps(u, _mm256_castsi256_ps(_mm256_set1_epi32(0x007fffff))),
                          _mm256_set1_ps(0.5f));  // u = m * 2^e, m in [0.5, 1)
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
  m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), _mm256_set1_ps(1.0f));  // m - 1 in [-0.29, 0.41)
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  for (const float c : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f,
                        -1.6668057665e-1f, 2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f})
    p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(c));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  __m256 r = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, y));
  r = _mm256_blendv_ps(r, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_EQ_OQ));
  r = _mm256_blendv_ps(r, u, _mm256_cmp_ps(u, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
  return _mm256_blendv_ps(r, _mm256_set1_ps(NAN), _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_NGE_UQ));
}

// bilinear() of 8 samples of one row at once, when all 8 have their four corners on the map
// (0 <= y < H - 1 and 0 <= x < W - 1; false otherwise, NaN included): the flat index of each
// top-left corner (int32: the caller checks H * W) and the corner weights of bilinear(), in its
// order and with its products, so that a loop accumulating them in order gets its exact sums.
struct Bilinear8 {
  __m256i idx;  // top-left corner; the others are idx + 1, idx + W, idx + W + 1
  __m256 wt[4];
};

inline bool bilinear8_interior(__m256 y, __m256 x, int64_t H, int64_t W, Bilinear8& b) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 inside = _mm256_and_ps(
      _mm256_and_ps(_mm256_cmp_ps(y, zero, _CMP_GE_OQ), _mm256_cmp_ps(y, _mm256_set1_ps(float(H - 1)), _CMP_LT_OQ)),
      _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_GE_OQ), _mm256_cmp_ps(x, _mm256_set1_ps(float(W - 1)), _CMP_LT_OQ)));
  if (_mm256_movemask_ps(inside) != 0xff) return false;
  const __m256 yf = _mm256_floor_ps(y), xf = _mm256_floor_ps(x);
  const __m256 ly = _mm256_sub_ps(y, yf), lx = _mm256_sub_ps(x, xf);
  const __m256 hy = _mm256_sub_ps(one, ly), hx = _mm256_sub_ps(one, lx);
  b.idx = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_cvttps_epi32(yf), _mm256_set1_epi32(int(W))),
                           _mm256_cvttps_epi32(xf));
  b.wt[0] = _mm256_mul_ps(hy, hx);
  b.wt[1] = _mm256_mul_ps(hy, lx);
  b.wt[2] = _mm256_mul_ps(ly, hx);
  b.wt[3] = _mm256_mul_ps(ly, lx);
  return true;
}

// Sleef's vector log1p cost as much as the rest of the negative term together (perf, this CPU).
// log1p(x) = log(u) * x / (u - 1) with u = 1 + x rounded corrects the rounding of u to a few ulp
// (and is x itself where u rounds to 1). For x >= -1, u is 0 or at least 2^-24: never denormal.
template <>
inline at::vec::Vectorized<float> Prim<at::vec::Vectorized<float>>::log1p(at::vec::Vectorized<float> x) {
  const __m256 xv = x, u = _mm256_add_ps(_mm256_set1_ps(1.0f), xv);
  const __m256 d = _mm256_sub_ps(u, _mm256_set1_ps(1.0f));
  const __m256 r = _mm256_mul_ps(log_avx2(u), _mm256_div_ps(xv, d));
  return _mm256_blendv_ps(r, xv, _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ));
}
#endif

// N independent vectors, operation by operation: the per-score chain of the negative term (exp,
// division, log, divisions) is too long for the core to overlap consecutive loop iterations, and
// interleaving four of them ran it 1.8x faster here.
template <typename S, int N>
struct Prim<at::vec::VectorizedN<S, N>> {
  using V = at::vec::VectorizedN<S, N>;
  static inline V exp(V x) { return x.exp(); }
  static inline V log1p(V x) {
    V r;
    for (int j = 0; j < N; ++j) r[j] = Prim<at::vec::Vectorized<S>>::log1p(x[j]);
    return r;
  }
  static inline V pow(V x, V y) { return x.pow(y); }
  static inline V max(V a, V b) { return at::vec::maximum(a, b); }  // propagates NaN
};

}  // namespace math
}  // namespace dw_ops
