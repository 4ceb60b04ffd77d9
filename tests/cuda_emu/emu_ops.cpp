// The dw_ops CUDA kernels compiled for the CPU (emu.h emulates the CUDA built-ins) and launched on a
// grid the caller chooses, so that tests can take every grid-stride and multi-block path with small
// inputs. Each function takes contiguous CPU tensors shaped as the kernel reads them, and returns the
// kernel's outputs followed by one int32 tensor per output: how many times each element was stored.
// Float outputs start as NaN and index outputs as -1, so an element never written stands out.
#include <ATen/OpMathType.h>
#include <torch/extension.h>

#include <limits>

#include "emu.h"

#include "cuda/bag_kernels.cuh"
#include "cuda/sample_kernels.cuh"
#include "cuda/weights_kernels.cuh"

namespace dw_ops {
namespace emu {
namespace {

using Outputs = std::vector<at::Tensor>;

// Allocates the outputs and registers them for write counting; finish() returns them with their counts.
class Launch {
 public:
  at::Tensor output(at::IntArrayRef sizes, const at::TensorOptions& options) {
    auto t = at::empty(sizes, options);
    if (at::isFloatingType(t.scalar_type()))
      t.fill_(std::numeric_limits<double>::quiet_NaN());
    else if (t.scalar_type() != at::kBool)
      t.fill_(-1);
    auto counts = at::zeros(sizes, at::kInt);
    tracked.push_back({static_cast<const char*>(t.data_ptr()), int64_t(t.element_size()), t.numel(),
                       counts.data_ptr<int32_t>()});
    outputs_.push_back(t);
    counts_.push_back(counts);
    return t;
  }

  template <typename... KernelArgs, typename... Args>
  void run(void (*kernel)(KernelArgs...), int64_t blocks, Args... args) {
    TORCH_CHECK(blocks >= 1, "blocks must be >= 1, got ", blocks);
    try {
      launch(kernel, static_cast<unsigned int>(blocks), gpu::kThreads, args...);
    } catch (const std::runtime_error& err) {
      tracked.clear();
      TORCH_CHECK(false, err.what());
    }
  }

  Outputs finish() {
    tracked.clear();
    Outputs all = outputs_;
    all.insert(all.end(), counts_.begin(), counts_.end());
    return all;
  }

 private:
  Outputs outputs_, counts_;
};

void check_inputs(std::initializer_list<at::Tensor> ts) {
  for (const auto& t : ts) TORCH_CHECK(t.is_cpu() && t.is_contiguous(), "inputs must be contiguous CPU tensors");
}

Outputs inside_mask(const at::Tensor& points, const at::Tensor& gt_boxes, int64_t blocks) {
  check_inputs({points, gt_boxes});
  const int64_t P = points.size(0), M = gt_boxes.size(0);
  Launch l;
  auto inside = l.output({M, P}, points.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "inside_mask", [&] {
    l.run(kernels::inside_mask_kernel<scalar_t>, blocks, points.data_ptr<scalar_t>(), gt_boxes.data_ptr<scalar_t>(),
          M, P, inside.data_ptr<bool>());
  });
  return l.finish();
}

Outputs bag_iou(const at::Tensor& points, const at::Tensor& strides, const at::Tensor& distances,
                const at::Tensor& gt_boxes, const at::Tensor& gt_image, const at::Tensor& pair_gt,
                const at::Tensor& pair_point, double sigma, bool hard_prior, int64_t blocks) {
  check_inputs({points, strides, distances, gt_boxes, gt_image, pair_gt, pair_point});
  const int64_t K = pair_gt.numel(), P = points.size(0), M = gt_boxes.size(0), N = distances.size(0);
  Launch l;
  auto prior = l.output({K}, points.options()), iou = l.output({K}, points.options());
  auto loss = l.output({K}, points.options());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "bag_iou", [&] {
    l.run(kernels::bag_iou_kernel<scalar_t>, blocks, points.data_ptr<scalar_t>(), strides.data_ptr<scalar_t>(),
          distances.data_ptr<scalar_t>(), gt_boxes.data_ptr<scalar_t>(), gt_image.data_ptr<int64_t>(),
          pair_gt.data_ptr<int64_t>(), pair_point.data_ptr<int64_t>(), K, P, M, N, static_cast<scalar_t>(sigma),
          hard_prior, prior.data_ptr<scalar_t>(), iou.data_ptr<scalar_t>(), loss.data_ptr<scalar_t>());
  });
  return l.finish();
}

Outputs bag_iou_backward(const at::Tensor& points, const at::Tensor& distances, const at::Tensor& gt_boxes,
                         const at::Tensor& gt_image, const at::Tensor& pair_gt, const at::Tensor& pair_point,
                         const at::Tensor& grad, int64_t blocks) {
  check_inputs({points, distances, gt_boxes, gt_image, pair_gt, pair_point, grad});
  const int64_t K = pair_gt.numel(), P = points.size(0), M = gt_boxes.size(0), N = distances.size(0);
  Launch l;
  auto pair_grad = l.output({K, 4}, distances.options());
  AT_DISPATCH_FLOATING_TYPES(distances.scalar_type(), "bag_iou_backward", [&] {
    l.run(kernels::bag_iou_backward_kernel<scalar_t>, blocks, points.data_ptr<scalar_t>(),
          distances.data_ptr<scalar_t>(), gt_boxes.data_ptr<scalar_t>(), gt_image.data_ptr<int64_t>(),
          pair_gt.data_ptr<int64_t>(), pair_point.data_ptr<int64_t>(), grad.data_ptr<scalar_t>(), K, P, M, N,
          pair_grad.data_ptr<scalar_t>());
  });
  return l.finish();
}

Outputs dual_weights(const at::Tensor& score, const at::Tensor& iou, const at::Tensor& giou_loss,
                     const at::Tensor& prior, const at::Tensor& offsets, int64_t pos_mode, double beta, double mu_num,
                     double mu_den, int64_t neg_mode, double gamma1, int64_t blocks) {
  check_inputs({score, iou, giou_loss, prior, offsets});
  const int64_t K = score.numel(), M = offsets.numel() - 1;
  Launch l;
  auto pos_weight = l.output({K}, score.options()), neg_prob = l.output({K}, score.options());
  AT_DISPATCH_FLOATING_TYPES(score.scalar_type(), "dual_weights", [&] {
    l.run(kernels::dual_weights_kernel<scalar_t>, blocks, score.data_ptr<scalar_t>(), iou.data_ptr<scalar_t>(),
          giou_loss.data_ptr<scalar_t>(), prior.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), M, K,
          static_cast<math::PosMode>(pos_mode), static_cast<math::NegMode>(neg_mode), static_cast<scalar_t>(beta),
          static_cast<scalar_t>(mu_num), static_cast<scalar_t>(mu_den), static_cast<scalar_t>(gamma1),
          pos_weight.data_ptr<scalar_t>(), neg_prob.data_ptr<scalar_t>());
  });
  return l.finish();
}

// x: the (N, C, P) class-major logits. Returns the per-block partials, the class gradient (N, C, P)
// and the centerness gradient (N, P); the gradients are (0, C, P) and (0, P) without compute_grad.
Outputs neg_loss_dense(const at::Tensor& x, const at::Tensor& ctr, double gamma, double base, bool compute_grad,
                       int64_t blocks) {
  check_inputs({x, ctr});
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2), rows = compute_grad ? N : 0;
  Launch l;
  auto partial = l.output({blocks}, x.options().dtype(at::kDouble));
  auto grad_cls = l.output({rows, C, P}, x.options()), grad_ctr = l.output({rows, P}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "neg_loss_dense", [&] {
    const auto kernel = compute_grad ? kernels::neg_loss_dense_kernel<scalar_t, true>
                                     : kernels::neg_loss_dense_kernel<scalar_t, false>;
    l.run(kernel, blocks, x.data_ptr<scalar_t>(), ctr.data_ptr<scalar_t>(), N, P, C, static_cast<scalar_t>(gamma),
          static_cast<scalar_t>(base), grad_cls.data_ptr<scalar_t>(), grad_ctr.data_ptr<scalar_t>(),
          partial.data_ptr<double>());
  });
  return l.finish();
}

// Returns the per-entry loss corrections, the class gradient (N, C, P) at the entries (NaN
// elsewhere) and the per-entry centerness corrections.
Outputs neg_loss_entries(const at::Tensor& x, const at::Tensor& ctr, const at::Tensor& index,
                         const at::Tensor& weight, double gamma_out, double gamma_in, double base, bool compute_grad,
                         int64_t blocks) {
  check_inputs({x, ctr, index, weight});
  TORCH_CHECK(weight.scalar_type() == at::kDouble, "weight must be float64 (the kernel reads doubles)");
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2), U = index.numel(), rows = compute_grad ? N : 0;
  Launch l;
  auto correction = l.output({U}, x.options().dtype(at::kDouble));
  auto grad_cls = l.output({rows, C, P}, x.options()), ctr_corr = l.output({compute_grad ? U : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "neg_loss_entries", [&] {
    const auto kernel = compute_grad ? kernels::neg_loss_entry_kernel<scalar_t, true>
                                     : kernels::neg_loss_entry_kernel<scalar_t, false>;
    l.run(kernel, blocks, x.data_ptr<scalar_t>(), ctr.data_ptr<scalar_t>(), N, P, C, index.data_ptr<int64_t>(),
          weight.data_ptr<double>(), U, static_cast<scalar_t>(gamma_out), static_cast<scalar_t>(gamma_in),
          static_cast<scalar_t>(base), correction.data_ptr<double>(), grad_cls.data_ptr<scalar_t>(),
          ctr_corr.data_ptr<scalar_t>());
  });
  return l.finish();
}

Outputs boundary_sample(const at::Tensor& boxes, const at::Tensor& offsets, int64_t blocks) {
  check_inputs({boxes, offsets});
  Launch l;
  auto out = l.output(boxes.sizes(), boxes.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "boundary_sample", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    l.run(kernels::boundary_sample_kernel<scalar_t, opmath_t>, blocks, boxes.data_ptr<scalar_t>(),
          offsets.data_ptr<scalar_t>(), boxes.numel(), boxes.size(2), boxes.size(3), out.data_ptr<scalar_t>());
  });
  return l.finish();
}

// Returns the (4 * numel) flat targets and contributions of the box gradient, and the offset gradient.
Outputs boundary_sample_backward(const at::Tensor& grad, const at::Tensor& boxes, const at::Tensor& offsets,
                                 int64_t blocks) {
  check_inputs({grad, boxes, offsets});
  const int64_t total = boxes.numel();
  Launch l;
  auto target = l.output({total * 4}, boxes.options().dtype(at::kLong));
  auto contrib = l.output({total * 4}, boxes.options().dtype(at::toOpMathType(boxes.scalar_type())));
  auto grad_offsets = l.output(offsets.sizes(), offsets.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "boundary_sample_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    l.run(kernels::boundary_sample_backward_kernel<scalar_t, opmath_t>, blocks, grad.data_ptr<scalar_t>(),
          boxes.data_ptr<scalar_t>(), offsets.data_ptr<scalar_t>(), total, boxes.size(2), boxes.size(3),
          target.data_ptr<int64_t>(), contrib.data_ptr<opmath_t>(), grad_offsets.data_ptr<scalar_t>());
  });
  return l.finish();
}

}  // namespace
}  // namespace emu
}  // namespace dw_ops

PYBIND11_MODULE(_cuda_emu, m) {
  using namespace dw_ops::emu;
  m.doc() = "the dw_ops CUDA kernels run on the CPU by an emulation of the CUDA execution model (tests only)";
  m.attr("threads_per_block") = dw_ops::gpu::kThreads;
  m.def("inside_mask", &inside_mask);
  m.def("bag_iou", &bag_iou);
  m.def("bag_iou_backward", &bag_iou_backward);
  m.def("dual_weights", &dual_weights);
  m.def("neg_loss_dense", &neg_loss_dense);
  m.def("neg_loss_entries", &neg_loss_entries);
  m.def("boundary_sample", &boundary_sample);
  m.def("boundary_sample_backward", &boundary_sample_backward);
}
