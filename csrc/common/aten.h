// The part of ATen the ops use: the Tensor class with its methods and operators, the dispatch
// macros, and the few free functions called, each from its per-operator header. <ATen/ATen.h>
// declares every operator and takes several times longer to parse than the rest of a kernel file;
// every user pays the build at install time (and `make demo` does).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_index_put_impl.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
