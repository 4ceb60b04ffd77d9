// Autograd of boundary_sample, in C++. The refinement calls it once per FPN level in every step,
// forward and backward, and a Python autograd wrapper cost more per call than the kernels of the
// smaller levels (the other ops run once per batch and keep theirs in dw_ops/_registration.py).
#include <torch/autograd.h>
#include <torch/library.h>

namespace dw_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The backward as a function of its own, so that differentiating it (create_graph=True, then a
// second backward) fails with a message instead of silently giving no gradient.
class BoundarySampleBackward : public torch::autograd::Function<BoundarySampleBackward> {
 public:
  static variable_list forward(AutogradContext*, const at::Tensor& grad, const at::Tensor& boxes,
                               const at::Tensor& offsets) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("dw_ops::_boundary_sample_backward", "")
            .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor grad_boxes, grad_offsets;
    std::tie(grad_boxes, grad_offsets) = op.call(grad, boxes, offsets);
    return {grad_boxes, grad_offsets};
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "dw_ops.boundary_sample has no second derivative (its backward was differentiated)");
  }
};

class BoundarySample : public torch::autograd::Function<BoundarySample> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& boxes, const at::Tensor& offsets) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("dw_ops::boundary_sample", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // to the CPU/CUDA kernel, not back here
    ctx->save_for_backward({boxes, offsets});
    return op.call(boxes, offsets);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return BoundarySampleBackward::apply(grads[0], saved[0], saved[1]);
  }
};

at::Tensor boundary_sample_autograd(const at::Tensor& boxes, const at::Tensor& offsets) {
  return BoundarySample::apply(boxes, offsets);
}

}  // namespace

TORCH_LIBRARY_IMPL(dw_ops, Autograd, m) {
  m.impl("boundary_sample", &boundary_sample_autograd);
}

}  // namespace dw_ops
