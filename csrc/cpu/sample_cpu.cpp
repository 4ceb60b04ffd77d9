// CPU kernels of boundary-point sampling (a depthwise 1x1 deformable convolution with unit weights).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <type_traits>

#include "common/aten.h"
#include "common/checks.h"
#include "common/dw_math.h"
#include "cpu/vec_math.h"

namespace dw_ops {
namespace {

using namespace math;

// The forward of one row, 8 float samples at a time with AVX2 gathers where all 8 are interior
// (else through `sample`, the scalar loop body); returns where the scalar tail starts: 0 for
// other dtypes, without AVX2, or for planes too large for 32-bit gather indices.
template <typename scalar_t, typename Sample>
int64_t sample_row_simd(const scalar_t* src, const scalar_t* off_y, const scalar_t* off_x, int64_t h, int64_t H,
                        int64_t W, scalar_t* dst, const Sample& sample) {
#if defined(CPU_CAPABILITY_AVX2) && !defined(_MSC_VER)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (H * W > INT32_MAX) return 0;
    const __m256i step = _mm256_set1_epi32(int(W)), one = _mm256_set1_epi32(1);
    const __m256 lanes = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t w = 0;
    for (; w + 8 <= W; w += 8) {
      const __m256 y = _mm256_add_ps(_mm256_set1_ps(float(h)), _mm256_loadu_ps(off_y + w));
      const __m256 x = _mm256_add_ps(_mm256_add_ps(_mm256_set1_ps(float(w)), lanes), _mm256_loadu_ps(off_x + w));
      Bilinear8 b;
      if (!bilinear8_interior(y, x, H, W, b)) {
        for (int64_t l = w; l < w + 8; ++l) sample(l);
        continue;
      }
      const __m256i idx[4] = {b.idx, _mm256_add_epi32(b.idx, one), _mm256_add_epi32(b.idx, step),
                              _mm256_add_epi32(_mm256_add_epi32(b.idx, step), one)};
      __m256 v = _mm256_mul_ps(b.wt[0], _mm256_i32gather_ps(src, idx[0], 4));
      for (int j = 1; j < 4; ++j) v = _mm256_fmadd_ps(b.wt[j], _mm256_i32gather_ps(src, idx[j], 4), v);
      _mm256_storeu_ps(dst + w, v);
    }
    return w;
  }
#endif
  return 0;
}

at::Tensor boundary_sample_cpu(const at::Tensor& boxes_, const at::Tensor& offsets_) {
  check_boundary_sample(boxes_, offsets_);
  const auto boxes = boxes_.contiguous(), offsets = offsets_.contiguous();
  const int64_t N = boxes.size(0), H = boxes.size(2), W = boxes.size(3), HW = H * W;
  auto out = at::empty_like(boxes);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "boundary_sample_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* in = boxes.data_ptr<scalar_t>();
    const scalar_t* off = offsets.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    // One image row of one (n, c) plane per work item: positions come from the loop counters.
    at::parallel_for(0, N * 4 * H, std::max<int64_t>(1, 4096 / W), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t plane = row / H, h = row % H;
        const int64_t n = plane / 4, c = plane % 4;
        const scalar_t* off_y = off + (n * 8 + 2 * c) * HW + h * W;
        const scalar_t* off_x = off_y + HW;
        const scalar_t* src = in + plane * HW;
        scalar_t* dst = o + plane * HW + h * W;
        const auto sample = [&](int64_t w) {
          const auto b = bilinear(opmath_t(h) + opmath_t(off_y[w]), opmath_t(w) + opmath_t(off_x[w]), H, W);
          opmath_t v = 0;
          if (all_corners_on_map(b)) {  // most samples
            for (int j = 0; j < 4; ++j) v += b.wt[j] * opmath_t(src[b.idx[j]]);
          } else {
            for (int j = 0; j < 4; ++j)
              if (b.idx[j] >= 0) v += b.wt[j] * opmath_t(src[b.idx[j]]);
          }
          dst[w] = v;
        };
        for (int64_t w = sample_row_simd(src, off_y, off_x, h, H, W, dst, sample); w < W; ++w) sample(w);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> boundary_sample_backward_cpu(const at::Tensor& grad_, const at::Tensor& boxes_,
                                                                const at::Tensor& offsets_) {
  check_boundary_sample(boxes_, offsets_);
  TORCH_CHECK(grad_.sizes() == boxes_.sizes(), "grad must have the shape of boxes ", shape_str(boxes_), ", got ",
              shape_str(grad_));
  const auto boxes = boxes_.contiguous(), offsets = offsets_.contiguous();
  const auto grad = grad_.to(boxes.scalar_type()).contiguous();
  const int64_t N = boxes.size(0), H = boxes.size(2), W = boxes.size(3), HW = H * W;
  // 16-bit inputs accumulate the scattered box gradient in float.
  auto grad_boxes_acc = at::zeros(boxes.sizes(), boxes.options().dtype(at::toOpMathType(boxes.scalar_type())));
  auto grad_offsets = at::empty_like(offsets);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "boundary_sample_backward_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* in = boxes.data_ptr<scalar_t>();
    const scalar_t* off = offsets.data_ptr<scalar_t>();
    const scalar_t* go = grad.data_ptr<scalar_t>();
    opmath_t* gb = grad_boxes_acc.data_ptr<opmath_t>();
    scalar_t* goff = grad_offsets.data_ptr<scalar_t>();
    // One (n, c) plane per task: its samples scatter only into its own plane, so no two threads
    // write the same element.
    at::parallel_for(0, N * 4, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / 4, c = plane % 4;
        const scalar_t* src = in + plane * HW;
        opmath_t* dst = gb + plane * HW;
        const scalar_t* off_y = off + (n * 8 + 2 * c) * HW;
        const scalar_t* off_x = off_y + HW;
        scalar_t* goff_y = goff + (n * 8 + 2 * c) * HW;
        scalar_t* goff_x = goff_y + HW;
        for (int64_t h = 0, pos = 0; h < H; ++h) {
          for (int64_t w = 0; w < W; ++w, ++pos) {
            const auto b = bilinear(opmath_t(h) + opmath_t(off_y[pos]), opmath_t(w) + opmath_t(off_x[pos]), H, W);
            const opmath_t g = go[plane * HW + pos];
            const bool inside = all_corners_on_map(b);
            opmath_t d_y = 0, d_x = 0;
            for (int j = 0; j < 4; ++j) {
              if (!inside && b.idx[j] < 0) continue;
              const opmath_t v = src[b.idx[j]];
              d_y += b.dwt_dy[j] * v;
              d_x += b.dwt_dx[j] * v;
              dst[b.idx[j]] += b.wt[j] * g;
            }
            goff_y[pos] = g * d_y;
            goff_x[pos] = g * d_x;
          }
        }
      }
    });
  });
  return {grad_boxes_acc.to(boxes.scalar_type()), grad_offsets};
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CPU, m) {
  m.impl("boundary_sample", &boundary_sample_cpu);
  m.impl("_boundary_sample_backward", &boundary_sample_backward_cpu);
}

}  // namespace dw_ops
