"""torch.compile(fullgraph=True) smoke test: the ops trace through dynamo with their fake kernels and
autograd formulas, and the compiled forward and backward equal eager mode."""
import pytest
import torch
from torch.testing import assert_close

import dw_ops
from ops_problems import random_entries


def cpp_compiler_available() -> bool:
    from torch._inductor import cpp_builder, exc
    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return False
    return True


def neg_loss_and_refine(cls, ctr, index, weight, boxes, offsets):
    return dw_ops.neg_loss(cls, ctr, index, weight, gamma_in=1.5), dw_ops.boundary_sample(boxes, offsets)


DIFFERENTIABLE = (0, 1, 4, 5)  # cls, ctr, boxes, offsets


def run(fn, inputs, grads):
    leaves = [t.clone().requires_grad_() if i in DIFFERENTIABLE else t for i, t in enumerate(inputs)]
    outputs = fn(*leaves)
    torch.autograd.backward(outputs, grads)
    return [o.detach() for o in outputs] + [leaves[i].grad for i in DIFFERENTIABLE]


@pytest.mark.skipif(not cpp_compiler_available(), reason="torch.compile needs a C++ compiler (none found)")
def test_compile_fullgraph_forward_backward():
    gen = torch.Generator().manual_seed(0)
    index, weight = random_entries((2, 9, 3), 8, gen, torch.float32)
    inputs = [torch.randn(2, 9, 3, generator=gen), torch.randn(2, 9, generator=gen), index, weight,
              10 * torch.rand(2, 4, 3, 5, generator=gen), 2 * torch.randn(2, 8, 3, 5, generator=gen)]
    grads = [torch.tensor(0.7), torch.randn(2, 4, 3, 5, generator=gen)]
    torch._dynamo.reset()
    compiled = torch.compile(neg_loss_and_refine, fullgraph=True)
    for got, want in zip(run(compiled, inputs, grads), run(neg_loss_and_refine, inputs, grads)):
        assert_close(got, want)
