// CUDA-side helpers shared by every .cu file; compiled by nvcc (real GPU) and by the host compiler
// against csrc/simt/simt.h (emulated GPU). Kernels never spell <<<>>>: CONVNET_LAUNCH checks the
// launch and, under emulation, reports the launch site.
#pragma once
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
// Blocks for a grid-stride loop over n items.
inline unsigned grid_for(int64_t n, int threads, unsigned max_blocks = 4096) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > max_blocks ? max_blocks : b));
}
}  // namespace convnet
