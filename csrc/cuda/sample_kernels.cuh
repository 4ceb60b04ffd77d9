// CUDA kernels of boundary-point sampling (launched by sample_cuda.cu; run on the CPU by tests/cuda_emu).
#pragma once

#include "common/dw_math.h"
#include "cuda/device.cuh"

namespace dw_ops {
namespace kernels {

// Output element i = (plane n * 4 + c, position y * W + x) samples channel c of image n at
// (y + dy, x + dx), with (dy, dx) from offset channels 2c and 2c + 1.
template <typename scalar_t, typename opmath_t>
__global__ void boundary_sample_kernel(const scalar_t* __restrict__ in, const scalar_t* __restrict__ off,
                                       int64_t total, int64_t H, int64_t W, scalar_t* __restrict__ out) {
  const int64_t HW = H * W;
  for (int64_t i = gpu::thread_index(); i < total; i += gpu::thread_count()) {
    const int64_t plane = i / HW, pos = i % HW;
    const int64_t n = plane / 4, c = plane % 4;
    const scalar_t* off_yx = off + (n * 8 + 2 * c) * HW + pos;
    const opmath_t y = opmath_t(pos / W) + opmath_t(off_yx[0]);
    const opmath_t x = opmath_t(pos % W) + opmath_t(off_yx[HW]);
    const auto b = math::bilinear(y, x, H, W);
    const scalar_t* src = in + plane * HW;
    opmath_t v = 0;
    for (int j = 0; j < 4; ++j)
      if (b.idx[j] >= 0) v += b.wt[j] * opmath_t(src[b.idx[j]]);
    gpu::store(out + i, v);
  }
}

// One thread per output element: its two offset gradients are its own. Its box gradient goes to up
// to four input elements that other samples may share, so instead of adding there it writes the
// four (flat input index, value) contributions; the caller sums them with a deterministic
// index_put_. A corner off the map contributes 0 to its plane's first element.
template <typename scalar_t, typename opmath_t>
__global__ void boundary_sample_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ in,
                                                const scalar_t* __restrict__ off, int64_t total, int64_t H, int64_t W,
                                                int64_t* __restrict__ target, opmath_t* __restrict__ contrib,
                                                scalar_t* __restrict__ grad_off) {
  const int64_t HW = H * W;
  for (int64_t i = gpu::thread_index(); i < total; i += gpu::thread_count()) {
    const int64_t plane = i / HW, pos = i % HW;
    const int64_t n = plane / 4, c = plane % 4;
    const int64_t oy = (n * 8 + 2 * c) * HW + pos, ox = oy + HW;
    const opmath_t y = opmath_t(pos / W) + opmath_t(off[oy]);
    const opmath_t x = opmath_t(pos % W) + opmath_t(off[ox]);
    const auto b = math::bilinear(y, x, H, W);
    const scalar_t* src = in + plane * HW;
    const opmath_t g = grad[i];
    opmath_t d_y = 0, d_x = 0;
    for (int j = 0; j < 4; ++j) {
      const bool on_map = b.idx[j] >= 0;
      if (on_map) {
        const opmath_t v = src[b.idx[j]];
        d_y += b.dwt_dy[j] * v;
        d_x += b.dwt_dx[j] * v;
      }
      gpu::store(target + 4 * i + j, plane * HW + (on_map ? b.idx[j] : 0));
      gpu::store(contrib + 4 * i + j, on_map ? b.wt[j] * g : opmath_t(0));
    }
    gpu::store(grad_off + oy, g * d_y);
    gpu::store(grad_off + ox, g * d_x);
  }
}

}  // namespace kernels
}  // namespace dw_ops
