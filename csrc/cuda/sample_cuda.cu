// CUDA kernels of boundary-point sampling (a depthwise 1x1 deformable convolution with unit weights).
// The math is dw_math.h's, as in cpu/sample_cpu.cpp.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/dw_math.h"
#include "cuda/launch.cuh"

namespace dw_ops {
namespace {

using namespace math;
using gpu::blocks_for;
using gpu::launch;
using gpu::thread_count;
using gpu::thread_index;

// Output element i = (plane n * 4 + c, position y * W + x) samples channel c of image n at
// (y + dy, x + dx), with (dy, dx) from offset channels 2c and 2c + 1.
template <typename scalar_t, typename opmath_t>
__global__ void boundary_sample_kernel(const scalar_t* __restrict__ in, const scalar_t* __restrict__ off,
                                       int64_t total, int64_t H, int64_t W, scalar_t* __restrict__ out) {
  const int64_t HW = H * W;
  for (int64_t i = thread_index(); i < total; i += thread_count()) {
    const int64_t plane = i / HW, pos = i % HW;
    const int64_t n = plane / 4, c = plane % 4;
    const scalar_t* off_yx = off + (n * 8 + 2 * c) * HW + pos;
    const opmath_t y = opmath_t(pos / W) + opmath_t(off_yx[0]);
    const opmath_t x = opmath_t(pos % W) + opmath_t(off_yx[HW]);
    const auto b = bilinear(y, x, H, W);
    const scalar_t* src = in + plane * HW;
    opmath_t v = 0;
    for (int j = 0; j < 4; ++j)
      if (b.idx[j] >= 0) v += b.wt[j] * opmath_t(src[b.idx[j]]);
    out[i] = v;
  }
}

// One thread per output element: its two offset gradients are its own; its box gradient goes to
// up to four input elements that other samples may share, hence the atomics (in opmath precision).
template <typename scalar_t, typename opmath_t>
__global__ void boundary_sample_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ in,
                                                const scalar_t* __restrict__ off, int64_t total, int64_t H, int64_t W,
                                                opmath_t* __restrict__ grad_in, scalar_t* __restrict__ grad_off) {
  const int64_t HW = H * W;
  for (int64_t i = thread_index(); i < total; i += thread_count()) {
    const int64_t plane = i / HW, pos = i % HW;
    const int64_t n = plane / 4, c = plane % 4;
    const int64_t oy = (n * 8 + 2 * c) * HW + pos, ox = oy + HW;
    const opmath_t y = opmath_t(pos / W) + opmath_t(off[oy]);
    const opmath_t x = opmath_t(pos % W) + opmath_t(off[ox]);
    const auto b = bilinear(y, x, H, W);
    const scalar_t* src = in + plane * HW;
    opmath_t* dst = grad_in + plane * HW;
    const opmath_t g = grad[i];
    opmath_t d_y = 0, d_x = 0;
    for (int j = 0; j < 4; ++j) {
      if (b.idx[j] < 0) continue;
      const opmath_t v = src[b.idx[j]];
      d_y += b.dwt_dy[j] * v;
      d_x += b.dwt_dx[j] * v;
      atomicAdd(dst + b.idx[j], b.wt[j] * g);
    }
    grad_off[oy] = g * d_y;
    grad_off[ox] = g * d_x;
  }
}

at::Tensor boundary_sample_cuda(const at::Tensor& boxes_, const at::Tensor& offsets_) {
  check_boundary_sample(boxes_, offsets_);
  const c10::cuda::CUDAGuard guard(boxes_.device());
  const auto boxes = boxes_.contiguous(), offsets = offsets_.contiguous();
  const int64_t H = boxes.size(2), W = boxes.size(3), total = boxes.numel();
  auto out = at::empty_like(boxes);
  if (total == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "boundary_sample_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    launch(boundary_sample_kernel<scalar_t, opmath_t>, blocks_for(total), boxes.data_ptr<scalar_t>(),
           offsets.data_ptr<scalar_t>(), total, H, W, out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> boundary_sample_backward_cuda(const at::Tensor& grad_, const at::Tensor& boxes_,
                                                                 const at::Tensor& offsets_) {
  check_boundary_sample(boxes_, offsets_);
  TORCH_CHECK(grad_.sizes() == boxes_.sizes(), "grad must have the shape of boxes ", shape_str(boxes_), ", got ",
              shape_str(grad_));
  const c10::cuda::CUDAGuard guard(boxes_.device());
  // The order in which samples add into a shared input element varies from run to run.
  at::globalContext().alertNotDeterministic("dw_ops::_boundary_sample_backward (CUDA)");
  const auto boxes = boxes_.contiguous(), offsets = offsets_.contiguous();
  const auto grad = grad_.to(boxes.device(), boxes.scalar_type()).contiguous();
  const int64_t H = boxes.size(2), W = boxes.size(3), total = boxes.numel();
  // 16-bit inputs accumulate the scattered box gradient in float.
  auto grad_boxes_acc = at::zeros(boxes.sizes(), boxes.options().dtype(at::toOpMathType(boxes.scalar_type())));
  auto grad_offsets = at::empty_like(offsets);
  if (total > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "boundary_sample_backward_cuda",
                                    [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      launch(boundary_sample_backward_kernel<scalar_t, opmath_t>, blocks_for(total), grad.data_ptr<scalar_t>(),
             boxes.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>(), total, H, W,
             grad_boxes_acc.data_ptr<opmath_t>(), grad_offsets.data_ptr<scalar_t>());
    });
  }
  return {grad_boxes_acc.to(boxes.scalar_type()), grad_offsets};
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CUDA, m) {
  m.impl("boundary_sample", &boundary_sample_cuda);
  m.impl("_boundary_sample_backward", &boundary_sample_backward_cuda);
}

}  // namespace dw_ops
