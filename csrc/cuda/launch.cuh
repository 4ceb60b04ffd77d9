// Launch configuration shared by the dw_ops CUDA kernels: every kernel is a grid-stride loop over
// int64 indices, so a capped grid covers any size, and every launch goes on the current stream
// followed by a launch check.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "cuda/device.cuh"

namespace dw_ops {
namespace gpu {

// Past this many blocks the grid-stride loops take over; more blocks would only add scheduling cost.
constexpr int64_t kMaxBlocks = 65535;

// Blocks for n independent work items (threads) of kThreads each, at most max_blocks.
inline unsigned int blocks_for(int64_t n, int64_t max_blocks = kMaxBlocks) {
  return static_cast<unsigned int>(std::min((n + kThreads - 1) / kThreads, max_blocks));
}

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), unsigned int blocks, Args&&... args) {
  kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace gpu
}  // namespace dw_ops
