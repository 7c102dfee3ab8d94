// CUDA-side helpers shared by every .cu file; compiled by nvcc (real GPU) and by the host compiler
// against csrc/simt/simt.h (emulated GPU). Kernels never spell <<<>>>: CONVNET_LAUNCH checks the
// launch and, under emulation, reports the launch site.
#pragma once
#include <atomic>
#include <cstdint>

#include "check.h"
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

#define CONVNET_CUDA_CHECK(expr)                                                             \
  do {                                                                                       \
    cudaError_t convnet_err_ = (expr);                                                       \
    if (convnet_err_ != cudaSuccess)                                                         \
      ::convnet::detail::fail<::convnet::Error>(__FILE__, __LINE__,                    \
          std::string(#expr) + ": " + cudaGetErrorString(convnet_err_));                     \
  } while (0)

// CONVNET_LAUNCH(kernel, grid, block, shared_bytes, stream, args...)
// `kernel` may be a template instance in parentheses, CONVNET_LAUNCH((k<4, 8>), ...), or a
// pointer to a __global__ function (auto f = k<4, 8>; CONVNET_LAUNCH(f, ...)): both compile with
// nvcc (`(k<4, 8>)<<<...>>>` is accepted) and under the emulation. The kernel must take at least
// one argument. Under emulation, errors of the kernel (bad launch configuration, barrier misuse,
// out-of-bounds writes, ...) are thrown as simt::Error from here, with this file:line.
#if defined(__CUDACC__)
#define CONVNET_LAUNCH(kernel, grid, block, smem, stream, ...)                               \
  do {                                                                                       \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);                              \
    CONVNET_CUDA_CHECK(cudaGetLastError());                                                  \
  } while (0)
// Dynamic shared memory of the current block: CONVNET_DYNAMIC_SHARED(float, smem);
#define CONVNET_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#else
#define CONVNET_LAUNCH(kernel, grid, block, smem, stream, ...)                               \
  ::simt::launch(__FILE__, __LINE__, #kernel, kernel, (grid), (block), (smem), (stream),    \
                 __VA_ARGS__)
#define CONVNET_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::simt::dynamic_shared())
#endif

#include "device.h"

namespace convnet {
// The stream of the current device: every launch goes there.
inline cudaStream_t current_stream() {
  return static_cast<cudaStream_t>(device_stream(current_device()));
}
// Threads the (logical) device `dev` keeps resident (SMs x threads per SM), from
// cudaGetDeviceProperties of its GPU once per device (under emulation: its workers x 2048).
inline int64_t resident_threads(int dev) {
  static std::atomic<int64_t> cache[64];
  if (dev < 0 || dev >= 64) return 2048;
  int64_t v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    cudaDeviceProp prop;
    CONVNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, physical_device(dev)));
    v = int64_t(prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1) *
        (prop.maxThreadsPerMultiProcessor > 0 ? prop.maxThreadsPerMultiProcessor : 2048);
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v;
}

// Waves of resident threads a grid-stride launch is given at most: enough blocks that the
// scheduler can back-fill SMs as blocks finish, few enough that each thread loops over several
// items (its setup amortised).
constexpr int kGridStrideWaves = 4;

// Blocks for a grid-stride loop over n items on the current device: one item per thread, at most
// kGridStrideWaves x the device's resident threads (or `max_blocks` when given).
inline unsigned grid_for(int64_t n, int threads, unsigned max_blocks = 0) {
  if (max_blocks == 0) {
    const int64_t cap = kGridStrideWaves * resident_threads(current_device()) / threads;
    max_blocks = unsigned(cap < 1 ? 1 : (cap > 0x7fffffff ? 0x7fffffff : cap));
  }
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > max_blocks ? max_blocks : b));
}
}  // namespace convnet
