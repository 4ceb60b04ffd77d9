// Device-side building blocks of the dw_ops kernels: thread indexing, warp and block reductions,
// output stores and the checks of index values. The kernel headers (*_kernels.cuh) use only these
// and common/dw_math.h, so that the CPU emulation of the kernels (tests/cuda_emu) compiles the same
// kernel text: it defines DW_CUDA_EMULATION and the CUDA built-ins before including them.
#pragma once

#include <cstdint>

#ifndef DW_CUDA_EMULATION
#include <c10/macros/Macros.h>
#endif

namespace dw_ops {
namespace gpu {

constexpr int kThreads = 256;  // threads per block of every kernel
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;

__device__ inline int64_t thread_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t thread_count() { return int64_t(gridDim.x) * blockDim.x; }

// Every output element is written through store(): the emulation counts the writes there, to check
// that each element is written exactly once.
template <typename T, typename V>
__device__ inline void store(T* p, V v) {
#ifdef DW_CUDA_EMULATION
  emu::count_write(p);
#endif
  *p = static_cast<T>(v);
}

// Index values are checked where a kernel reads them, not on the host (that would synchronise the
// stream). A failed check is a device-side assert whose text names the argument; the kernel skips
// the element, so nothing is read out of bounds. Returns ok.
#ifdef DW_CUDA_EMULATION
#define DW_CHECK_INDEX(ok, msg) ::dw_ops::emu::check_index((ok), msg)
#else
#define DW_CHECK_INDEX(ok, msg) ::dw_ops::gpu::check_index((ok), msg)
__device__ inline bool check_index(bool ok, const char* msg) {
  CUDA_KERNEL_ASSERT_MSG(ok, msg);
  return ok;
}
#endif

template <typename T, typename Op>
__device__ T warp_reduce(T v, Op op) {
  for (int d = kWarpSize / 2; d > 0; d /= 2) v = op(v, __shfl_down_sync(0xffffffffu, v, d));
  return v;
}

// Reduces v over a block of kThreads threads (as launch() starts them); every thread must call it
// and every thread gets the result. scratch: kWarps elements of shared memory, reusable by the next call.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_reduce(v, op);
  __syncthreads();  // a previous call's threads may still be reading scratch[0]
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) v = op(v, scratch[w]);
    scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

}  // namespace gpu
}  // namespace dw_ops
