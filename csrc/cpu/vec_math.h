// SIMD instantiation of the shared math: Prim<T> for at::vec::Vectorized, so that the formulas of
// common/dw_math.h run 8 (float) or 4 (double) scores at a time on AVX2 CPUs. With no SIMD
// capability compiled in, Vectorized falls back to element loops and the results are the same.
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

}  // namespace math
}  // namespace dw_ops
