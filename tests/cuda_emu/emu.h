// A CPU emulation of the CUDA execution model, enough to run the dw_ops kernels (csrc/cuda/*_kernels.cuh)
// unmodified: one host thread per CUDA thread, the blocks of a grid one after another, so that
// `__shared__` can be a static variable; __syncthreads is a barrier of the block's threads and
// __shfl_down_sync an exchange through a per-warp buffer between two barriers of the warp. The
// kernels' stores are counted (gpu::store calls emu::count_write) to check that every output
// element is written exactly once.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define DW_CUDA_EMULATION 1
#define __global__
#define __device__
#define __shared__ static  // one block runs at a time, so a static is the block's shared memory

struct dim3 {
  unsigned int x = 0, y = 0, z = 0;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace dw_ops {
namespace emu {

constexpr unsigned int kWarpSize = 32;

// A barrier of n threads that also counts the threads that have left the kernel: a barrier that
// some threads never reach (a __syncthreads in a branch) completes once the others have left,
// and is reported as divergent instead of hanging.
class Barrier {
 public:
  explicit Barrier(unsigned int n) : n_(n) {}

  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ + exited_ == n_) return release();
    cv_.wait(lock, [&] { return generation_ != generation; });
  }

  void exit() {
    std::unique_lock<std::mutex> lock(mutex_);
    ++exited_;
    if (arrived_ > 0 && arrived_ + exited_ == n_) release();
  }

  bool divergent() const { return divergent_; }

 private:
  void release() {
    divergent_ = divergent_ || exited_ > 0;
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }

  const unsigned int n_;
  unsigned int arrived_ = 0, exited_ = 0;
  uint64_t generation_ = 0;
  bool divergent_ = false;
  std::mutex mutex_;
  std::condition_variable cv_;
};

struct Warp {
  Warp() : barrier(kWarpSize) {}
  Barrier barrier;
  uint64_t slots[kWarpSize] = {};
};

struct Block {
  explicit Block(unsigned int threads) : barrier(threads), warps((threads + kWarpSize - 1) / kWarpSize) {}
  Barrier barrier;
  std::vector<Warp> warps;
};

inline thread_local Block* current_block = nullptr;

// What went wrong in the current launch: the first failed check, and stores outside the outputs.
struct Faults {
  std::mutex mutex;
  std::string first;
  std::atomic<int64_t> stray_writes{0};
};
inline Faults faults;

inline void fault(const char* msg) {
  std::lock_guard<std::mutex> lock(faults.mutex);
  if (faults.first.empty()) faults.first = msg;
}

// DW_CHECK_INDEX: on the GPU a device-side assert; here the launch throws the message afterwards.
inline bool check_index(bool ok, const char* msg) {
  if (!ok) fault(msg);
  return ok;
}

// Output buffers whose stores are counted, one int32 counter per element.
struct Tracked {
  const char* begin;
  int64_t elem_size, numel;
  int32_t* counts;
};
inline std::vector<Tracked> tracked;

inline void count_write(const void* p) {
  const char* c = static_cast<const char*>(p);
  for (const auto& t : tracked) {
    if (c >= t.begin && c < t.begin + t.numel * t.elem_size) {
      __atomic_fetch_add(t.counts + (c - t.begin) / t.elem_size, 1, __ATOMIC_RELAXED);
      return;
    }
  }
  faults.stray_writes.fetch_add(1, std::memory_order_relaxed);
}

// Runs kernel(args...) on a grid of `blocks` blocks of `threads` threads. Throws std::runtime_error
// (after the whole grid has run) when an index check failed, a store left the tracked outputs, or a
// barrier was reached by only part of a block.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), unsigned int blocks, unsigned int threads, Args... args) {
  faults.first.clear();
  faults.stray_writes = 0;
  gridDim = {blocks, 1, 1};
  blockDim = {threads, 1, 1};
  bool divergent = false;
  for (unsigned int b = 0; b < blocks; ++b) {
    Block block(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned int t = 0; t < threads; ++t) {
      pool.emplace_back([&, b, t] {
        blockIdx = {b, 0, 0};
        threadIdx = {t, 0, 0};
        current_block = &block;
        kernel(args...);
        block.warps[t / kWarpSize].barrier.exit();
        block.barrier.exit();
      });
    }
    for (auto& th : pool) th.join();
    divergent = divergent || block.barrier.divergent();
    for (const auto& w : block.warps) divergent = divergent || w.barrier.divergent();
  }
  if (!faults.first.empty()) throw std::runtime_error("device-side check failed: " + faults.first);
  if (faults.stray_writes > 0)
    throw std::runtime_error(std::to_string(faults.stray_writes.load()) + " stores outside the kernel's outputs");
  if (divergent) throw std::runtime_error("a barrier was reached by only part of a block or warp");
}

}  // namespace emu
}  // namespace dw_ops

inline void __syncthreads() { dw_ops::emu::current_block->barrier.wait(); }

// The full-warp shuffle the kernels use: every lane publishes its value, then reads lane + delta's
// (its own past the end of the warp, as on the GPU).
template <typename T>
T __shfl_down_sync(unsigned int mask, T v, unsigned int delta) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "the emulation shuffles values of up to 8 bytes");
  if (mask != 0xffffffffu) dw_ops::emu::fault("the emulation supports full-warp shuffles only");
  auto& warp = dw_ops::emu::current_block->warps[threadIdx.x / dw_ops::emu::kWarpSize];
  const unsigned int lane = threadIdx.x % dw_ops::emu::kWarpSize;
  std::memcpy(&warp.slots[lane], &v, sizeof(T));
  warp.barrier.wait();
  T out = v;
  if (lane + delta < dw_ops::emu::kWarpSize) std::memcpy(&out, &warp.slots[lane + delta], sizeof(T));
  warp.barrier.wait();
  return out;
}
