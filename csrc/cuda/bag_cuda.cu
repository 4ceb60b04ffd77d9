// CUDA backend of the candidate-bag ops: pair finding, and prior / IoU / GIoU loss per pair; the
// kernels are in bag_kernels.cuh.
// The math is dw_math.h's and the steps around the kernels glue.h's, as in cpu/bag_cpu.cpp.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/aten.h"
#include "common/checks.h"
#include "common/glue.h"
#include "cuda/bag_kernels.cuh"
#include "cuda/launch.cuh"

namespace dw_ops {
namespace {

using gpu::blocks_for;
using gpu::launch;
using namespace kernels;

std::tuple<at::Tensor, at::Tensor, at::Tensor> bag_pairs_cuda(const at::Tensor& points_,
                                                              const at::Tensor& gt_boxes_) {
  check_bag_pairs(points_, gt_boxes_);
  const c10::cuda::CUDAGuard guard(points_.device());
  const auto points = points_.contiguous();
  const auto gt_boxes = gt_boxes_.contiguous();
  const int64_t P = points.size(0), M = gt_boxes.size(0);
  // The (M, P) inside mask is the only dense intermediate; never (M, P, 4).
  auto inside = at::empty({M, P}, points.options().dtype(at::kBool));
  if (inside.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "bag_pairs_cuda", [&] {
      launch(inside_mask_kernel<scalar_t>, blocks_for(M * P), points.data_ptr<scalar_t>(),
             gt_boxes.data_ptr<scalar_t>(), M, P, inside.data_ptr<bool>());
    });
  }
  return pairs_from_mask(inside);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bag_iou_cuda(const at::Tensor& points_, const at::Tensor& strides_,
                                                           const at::Tensor& distances_, const at::Tensor& gt_boxes_,
                                                           const at::Tensor& gt_image_, const at::Tensor& pair_gt_,
                                                           const at::Tensor& pair_point_, double sigma,
                                                           bool hard_prior) {
  check_bag_iou(points_, strides_, distances_, gt_boxes_, gt_image_, pair_gt_, pair_point_);
  const c10::cuda::CUDAGuard guard(points_.device());
  const auto points = points_.contiguous(), strides = strides_.contiguous(), distances = distances_.contiguous();
  const auto gt_boxes = gt_boxes_.contiguous(), gt_image = gt_image_.contiguous();
  const auto pair_gt = pair_gt_.contiguous(), pair_point = pair_point_.contiguous();
  const int64_t K = pair_gt.numel(), P = points.size(0), M = gt_boxes.size(0), N = distances.size(0);
  auto prior = at::empty({K}, points.options());
  auto iou = at::empty({K}, points.options());
  auto giou_loss = at::empty({K}, points.options());
  if (K == 0) return {prior, iou, giou_loss};
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "bag_iou_cuda", [&] {
    launch(bag_iou_kernel<scalar_t>, blocks_for(K), points.data_ptr<scalar_t>(), strides.data_ptr<scalar_t>(),
           distances.data_ptr<scalar_t>(), gt_boxes.data_ptr<scalar_t>(), gt_image.data_ptr<int64_t>(),
           pair_gt.data_ptr<int64_t>(), pair_point.data_ptr<int64_t>(), K, P, M, N, static_cast<scalar_t>(sigma),
           hard_prior, prior.data_ptr<scalar_t>(), iou.data_ptr<scalar_t>(), giou_loss.data_ptr<scalar_t>());
  });
  return {prior, iou, giou_loss};
}

at::Tensor bag_iou_backward_cuda(const at::Tensor& grad_, const at::Tensor& points_, const at::Tensor& distances_,
                                 const at::Tensor& gt_boxes_, const at::Tensor& gt_image_, const at::Tensor& pair_gt_,
                                 const at::Tensor& pair_point_) {
  check_bag_iou_pairs(points_, distances_, gt_boxes_, gt_image_, pair_gt_, pair_point_);
  const c10::cuda::CUDAGuard guard(points_.device());
  const auto points = points_.contiguous(), distances = distances_.contiguous();
  const auto gt_boxes = gt_boxes_.contiguous(), gt_image = gt_image_.contiguous();
  const auto pair_gt = pair_gt_.contiguous(), pair_point = pair_point_.contiguous();
  const auto grad = grad_.to(distances.device(), distances.scalar_type()).contiguous();
  const int64_t K = pair_gt.numel(), P = points.size(0), M = gt_boxes.size(0), N = distances.size(0);
  TORCH_CHECK(grad.numel() == K, "grad_giou_loss must have one value per pair (", K, "), got ", grad.numel());
  auto pair_grad = at::empty({K, 4}, distances.options());
  if (K > 0) {
    AT_DISPATCH_FLOATING_TYPES(distances.scalar_type(), "bag_iou_backward_cuda", [&] {
      launch(bag_iou_backward_kernel<scalar_t>, blocks_for(K), points.data_ptr<scalar_t>(),
             distances.data_ptr<scalar_t>(), gt_boxes.data_ptr<scalar_t>(), gt_image.data_ptr<int64_t>(),
             pair_gt.data_ptr<int64_t>(), pair_point.data_ptr<int64_t>(), grad.data_ptr<scalar_t>(), K, P, M, N,
             pair_grad.data_ptr<scalar_t>());
    });
  }
  return scatter_pair_grads(pair_grad, distances, gt_image, pair_gt, pair_point);
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CUDA, m) {
  m.impl("bag_pairs", &bag_pairs_cuda);
  m.impl("bag_iou", &bag_iou_cuda);
  m.impl("_bag_iou_backward", &bag_iou_backward_cuda);
}

}  // namespace dw_ops
