// CUDA backend of boundary-point sampling (a depthwise 1x1 deformable convolution with unit
// weights); the kernels are in sample_kernels.cuh. The math is dw_math.h's, as in cpu/sample_cpu.cpp.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/aten.h"
#include "common/checks.h"
#include "common/glue.h"
#include "cuda/launch.cuh"
#include "cuda/sample_kernels.cuh"

namespace dw_ops {
namespace {

using gpu::blocks_for;
using gpu::launch;
using namespace kernels;

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
  const auto boxes = boxes_.contiguous(), offsets = offsets_.contiguous();
  const auto grad = grad_.to(boxes.device(), boxes.scalar_type()).contiguous();
  const int64_t total = boxes.numel();
  // 16-bit inputs accumulate the box gradient in float.
  const auto acc_type = at::toOpMathType(boxes.scalar_type());
  auto grad_boxes_acc = at::zeros(boxes.sizes(), boxes.options().dtype(acc_type));
  auto grad_offsets = at::empty_like(offsets);
  if (total == 0) return {grad_boxes_acc.to(boxes.scalar_type()), grad_offsets};
  // Four (input element, value) contributions per sample, summed by a sort-based index_put_
  // instead of atomics, so that the gradient is deterministic.
  auto target = at::empty({total * 4}, boxes.options().dtype(at::kLong));
  auto contrib = at::empty({total * 4}, boxes.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "boundary_sample_backward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    launch(boundary_sample_backward_kernel<scalar_t, opmath_t>, blocks_for(total), grad.data_ptr<scalar_t>(),
           boxes.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>(), total, boxes.size(2), boxes.size(3),
           target.data_ptr<int64_t>(), contrib.data_ptr<opmath_t>(), grad_offsets.data_ptr<scalar_t>());
  });
  accumulate_into(grad_boxes_acc.view(-1), target, contrib);
  return {grad_boxes_acc.to(boxes.scalar_type()), grad_offsets};
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CUDA, m) {
  m.impl("boundary_sample", &boundary_sample_cuda);
  m.impl("_boundary_sample_backward", &boundary_sample_backward_cuda);
}

}  // namespace dw_ops
