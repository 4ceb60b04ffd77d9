// CUDA kernels of the candidate-bag ops: pair finding, and prior / IoU / GIoU loss per pair.
// The math is dw_math.h's and the steps around the kernels glue.h's, as in cpu/bag_cpu.cpp.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/dw_math.h"
#include "common/glue.h"
#include "cuda/launch.cuh"

namespace dw_ops {
namespace {

using namespace math;
using gpu::blocks_for;
using gpu::launch;
using gpu::thread_count;
using gpu::thread_index;

// Element i of the (M, P) inside mask is (GT i / P, point i % P).
template <typename scalar_t>
__global__ void inside_mask_kernel(const scalar_t* __restrict__ pts, const scalar_t* __restrict__ gts, int64_t M,
                                   int64_t P, bool* __restrict__ inside) {
  for (int64_t i = thread_index(); i < M * P; i += thread_count()) {
    const int64_t g = i / P, p = i % P;
    inside[i] = strictly_inside(pts[2 * p], pts[2 * p + 1], gts + 4 * g);
  }
}

// One thread per pair k = (GT pg[k], point pp[k]); the point's distances come from the GT's image.
template <typename scalar_t>
__global__ void bag_iou_kernel(const scalar_t* __restrict__ pts, const scalar_t* __restrict__ str,
                               const scalar_t* __restrict__ dist, const scalar_t* __restrict__ gts,
                               const int64_t* __restrict__ img, const int64_t* __restrict__ pg,
                               const int64_t* __restrict__ pp, int64_t K, int64_t P, scalar_t sigma, bool hard_prior,
                               scalar_t* __restrict__ out_prior, scalar_t* __restrict__ out_iou,
                               scalar_t* __restrict__ out_loss) {
  for (int64_t k = thread_index(); k < K; k += thread_count()) {
    const int64_t g = pg[k], p = pp[k];
    const scalar_t x = pts[2 * p], y = pts[2 * p + 1];
    scalar_t box[4];
    decode_box(x, y, dist + 4 * (img[g] * P + p), box);
    const auto r = iou_terms(box, gts + 4 * g);
    out_prior[k] = center_prior(x, y, str[p], gts + 4 * g, sigma, hard_prior);
    out_iou[k] = r.iou;
    out_loss[k] = scalar_t(1) - r.giou;
  }
}

// One thread per pair writes its own row of the (K, 4) gradient; scatter_pair_grads sums the rows.
template <typename scalar_t>
__global__ void bag_iou_backward_kernel(const scalar_t* __restrict__ pts, const scalar_t* __restrict__ dist,
                                        const scalar_t* __restrict__ gts, const int64_t* __restrict__ img,
                                        const int64_t* __restrict__ pg, const int64_t* __restrict__ pp,
                                        const scalar_t* __restrict__ grad, int64_t K, int64_t P,
                                        scalar_t* __restrict__ pair_grad) {
  for (int64_t k = thread_index(); k < K; k += thread_count()) {
    const int64_t g = pg[k], p = pp[k];
    scalar_t box[4];
    decode_box(pts[2 * p], pts[2 * p + 1], dist + 4 * (img[g] * P + p), box);
    giou_loss_backward(box, gts + 4 * g, grad[k], pair_grad + 4 * k);
  }
}

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
  const int64_t K = pair_gt.numel(), P = points.size(0);
  auto prior = at::empty({K}, points.options());
  auto iou = at::empty({K}, points.options());
  auto giou_loss = at::empty({K}, points.options());
  if (K == 0) return {prior, iou, giou_loss};
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "bag_iou_cuda", [&] {
    launch(bag_iou_kernel<scalar_t>, blocks_for(K), points.data_ptr<scalar_t>(), strides.data_ptr<scalar_t>(),
           distances.data_ptr<scalar_t>(), gt_boxes.data_ptr<scalar_t>(), gt_image.data_ptr<int64_t>(),
           pair_gt.data_ptr<int64_t>(), pair_point.data_ptr<int64_t>(), K, P, static_cast<scalar_t>(sigma),
           hard_prior, prior.data_ptr<scalar_t>(), iou.data_ptr<scalar_t>(), giou_loss.data_ptr<scalar_t>());
  });
  return {prior, iou, giou_loss};
}

at::Tensor bag_iou_backward_cuda(const at::Tensor& grad_, const at::Tensor& points_, const at::Tensor& distances_,
                                 const at::Tensor& gt_boxes_, const at::Tensor& gt_image_, const at::Tensor& pair_gt_,
                                 const at::Tensor& pair_point_) {
  check_dim(points_, "points", 2, "(P, 2)");
  const auto strides_unused = at::ones({points_.size(0)}, points_.options());  // the backward needs no strides
  check_bag_iou(points_, strides_unused, distances_, gt_boxes_, gt_image_, pair_gt_, pair_point_);
  const c10::cuda::CUDAGuard guard(points_.device());
  const auto points = points_.contiguous(), distances = distances_.contiguous();
  const auto gt_boxes = gt_boxes_.contiguous(), gt_image = gt_image_.contiguous();
  const auto pair_gt = pair_gt_.contiguous(), pair_point = pair_point_.contiguous();
  const auto grad = grad_.to(distances.device(), distances.scalar_type()).contiguous();
  const int64_t K = pair_gt.numel(), P = points.size(0);
  TORCH_CHECK(grad.numel() == K, "grad_giou_loss must have one value per pair (", K, "), got ", grad.numel());
  auto pair_grad = at::empty({K, 4}, distances.options());
  if (K > 0) {
    AT_DISPATCH_FLOATING_TYPES(distances.scalar_type(), "bag_iou_backward_cuda", [&] {
      launch(bag_iou_backward_kernel<scalar_t>, blocks_for(K), points.data_ptr<scalar_t>(),
             distances.data_ptr<scalar_t>(), gt_boxes.data_ptr<scalar_t>(), gt_image.data_ptr<int64_t>(),
             pair_gt.data_ptr<int64_t>(), pair_point.data_ptr<int64_t>(), grad.data_ptr<scalar_t>(), K, P,
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
