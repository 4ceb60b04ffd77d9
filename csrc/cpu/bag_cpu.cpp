// CPU kernels of the candidate-bag ops: pair finding, and prior / IoU / GIoU loss per pair.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/aten.h"
#include "common/checks.h"
#include "common/dw_math.h"
#include "common/glue.h"

namespace dw_ops {
namespace {

using namespace math;

// Work per parallel chunk: enough elements that thread start-up stays negligible.
constexpr int64_t kGrain = 2048;

std::tuple<at::Tensor, at::Tensor, at::Tensor> bag_pairs_cpu(const at::Tensor& points_, const at::Tensor& gt_boxes_) {
  check_bag_pairs(points_, gt_boxes_);
  const auto points = points_.contiguous();
  const auto gt_boxes = gt_boxes_.contiguous();
  const int64_t P = points.size(0), M = gt_boxes.size(0);
  // Two passes per GT, in parallel over GTs: count its inside points, then write them at its
  // offset. Pairs come grouped per GT, points ascending; nothing (M, P)-sized is stored.
  auto offsets = at::zeros({M + 1}, points.options().dtype(at::kLong));
  int64_t* off = offsets.data_ptr<int64_t>();
  at::Tensor pair_gt, pair_point;
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "bag_pairs_cpu", [&] {
    const scalar_t* pts = points.data_ptr<scalar_t>();
    const scalar_t* gts = gt_boxes.data_ptr<scalar_t>();
    at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        int64_t count = 0;
        for (int64_t p = 0; p < P; ++p) count += strictly_inside(pts[2 * p], pts[2 * p + 1], gts + 4 * g);
        off[g + 1] = count;
      }
    });
    for (int64_t g = 0; g < M; ++g) off[g + 1] += off[g];
    pair_gt = at::empty({off[M]}, offsets.options());
    pair_point = at::empty({off[M]}, offsets.options());
    int64_t* pg = pair_gt.data_ptr<int64_t>();
    int64_t* pp = pair_point.data_ptr<int64_t>();
    at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        int64_t k = off[g];
        for (int64_t p = 0; p < P; ++p) {
          if (strictly_inside(pts[2 * p], pts[2 * p + 1], gts + 4 * g)) {
            pg[k] = g;
            pp[k++] = p;
          }
        }
      }
    });
  });
  return {pair_gt, pair_point, offsets};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bag_iou_cpu(const at::Tensor& points_, const at::Tensor& strides_,
                                                          const at::Tensor& distances_, const at::Tensor& gt_boxes_,
                                                          const at::Tensor& gt_image_, const at::Tensor& pair_gt_,
                                                          const at::Tensor& pair_point_, double sigma,
                                                          bool hard_prior) {
  check_bag_iou(points_, strides_, distances_, gt_boxes_, gt_image_, pair_gt_, pair_point_);
  check_bag_iou_values(points_, distances_, gt_boxes_, gt_image_, pair_gt_, pair_point_);
  const auto points = points_.contiguous(), strides = strides_.contiguous(), distances = distances_.contiguous();
  const auto gt_boxes = gt_boxes_.contiguous(), gt_image = gt_image_.contiguous();
  const auto pair_gt = pair_gt_.contiguous(), pair_point = pair_point_.contiguous();
  const int64_t K = pair_gt.numel(), P = points.size(0);
  auto prior = at::empty({K}, points.options());
  auto iou = at::empty({K}, points.options());
  auto giou_loss = at::empty({K}, points.options());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "bag_iou_cpu", [&] {
    const scalar_t* pts = points.data_ptr<scalar_t>();
    const scalar_t* str = strides.data_ptr<scalar_t>();
    const scalar_t* dist = distances.data_ptr<scalar_t>();
    const scalar_t* gts = gt_boxes.data_ptr<scalar_t>();
    const int64_t* img = gt_image.data_ptr<int64_t>();
    const int64_t* pg = pair_gt.data_ptr<int64_t>();
    const int64_t* pp = pair_point.data_ptr<int64_t>();
    scalar_t* out_prior = prior.data_ptr<scalar_t>();
    scalar_t* out_iou = iou.data_ptr<scalar_t>();
    scalar_t* out_loss = giou_loss.data_ptr<scalar_t>();
    at::parallel_for(0, K, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t g = pg[k], p = pp[k];
        const scalar_t x = pts[2 * p], y = pts[2 * p + 1];
        scalar_t box[4];
        decode_box(x, y, dist + 4 * (img[g] * P + p), box);
        const auto r = iou_terms(box, gts + 4 * g);
        out_prior[k] = center_prior(x, y, str[p], gts + 4 * g, scalar_t(sigma), hard_prior);
        out_iou[k] = r.iou;
        out_loss[k] = scalar_t(1) - r.giou;
      }
    });
  });
  return {prior, iou, giou_loss};
}

at::Tensor bag_iou_backward_cpu(const at::Tensor& grad_, const at::Tensor& points_, const at::Tensor& distances_,
                                const at::Tensor& gt_boxes_, const at::Tensor& gt_image_, const at::Tensor& pair_gt_,
                                const at::Tensor& pair_point_) {
  check_bag_iou_pairs(points_, distances_, gt_boxes_, gt_image_, pair_gt_, pair_point_);
  check_bag_iou_values(points_, distances_, gt_boxes_, gt_image_, pair_gt_, pair_point_);
  const auto points = points_.contiguous(), distances = distances_.contiguous();
  const auto gt_boxes = gt_boxes_.contiguous(), gt_image = gt_image_.contiguous();
  const auto pair_gt = pair_gt_.contiguous(), pair_point = pair_point_.contiguous();
  const auto grad = grad_.to(distances.scalar_type()).contiguous();
  const int64_t K = pair_gt.numel(), P = points.size(0);
  TORCH_CHECK(grad.numel() == K, "grad_giou_loss must have one value per pair (", K, "), got ", grad.numel());
  auto pair_grad = at::empty({K, 4}, distances.options());
  AT_DISPATCH_FLOATING_TYPES(distances.scalar_type(), "bag_iou_backward_cpu", [&] {
    const scalar_t* pts = points.data_ptr<scalar_t>();
    const scalar_t* dist = distances.data_ptr<scalar_t>();
    const scalar_t* gts = gt_boxes.data_ptr<scalar_t>();
    const int64_t* img = gt_image.data_ptr<int64_t>();
    const int64_t* pg = pair_gt.data_ptr<int64_t>();
    const int64_t* pp = pair_point.data_ptr<int64_t>();
    const scalar_t* gr = grad.data_ptr<scalar_t>();
    scalar_t* out = pair_grad.data_ptr<scalar_t>();
    at::parallel_for(0, K, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t g = pg[k], p = pp[k];
        scalar_t box[4];
        decode_box(pts[2 * p], pts[2 * p + 1], dist + 4 * (img[g] * P + p), box);
        giou_loss_backward(box, gts + 4 * g, gr[k], out + 4 * k);
      }
    });
  });
  return scatter_pair_grads(pair_grad, distances, gt_image, pair_gt, pair_point);
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, CPU, m) {
  m.impl("bag_pairs", &bag_pairs_cpu);
  m.impl("bag_iou", &bag_iou_cpu);
  m.impl("_bag_iou_backward", &bag_iou_backward_cpu);
}

}  // namespace dw_ops
