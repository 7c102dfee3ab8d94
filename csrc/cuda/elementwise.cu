// Elementwise helpers (declared in csrc/common/elementwise.h).
// Thread mapping: grid-stride loop over groups of 4 consecutive floats, loaded and stored as
// float4 when every pointer is 16-byte aligned (kVec4), else one float at a time; in the float4
// form the n % 4 trailing floats go to the first threads of the grid. 64-bit indices: a buffer
// may hold 2^31 floats or more.
#include "cuda_check.h"
#include "elementwise.h"

namespace convnet {
namespace {

__device__ __forceinline__ float axpby1(float x, float y, float alpha, float beta) {
  return beta == 0.f ? alpha * x : alpha * x + beta * y;
}

template <bool kVec4>
__global__ void fill_kernel(float* y, int64_t n, float value) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride)
      reinterpret_cast<float4*>(y)[i] = make_float4(value, value, value, value);
    done = 4 * n4;
  }
  for (int64_t i = done + tid; i < n; i += stride) y[i] = value;
}

// beta == 0 never reads y (it may hold NaN).
template <bool kVec4>
__global__ void axpby_kernel(float* y, const float* x, int64_t n, float alpha, float beta) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      const float4 xv = reinterpret_cast<const float4*>(x)[i];
      const float4 yv = beta == 0.f ? make_float4(0.f, 0.f, 0.f, 0.f)
                                    : reinterpret_cast<const float4*>(y)[i];
      reinterpret_cast<float4*>(y)[i] =
          make_float4(axpby1(xv.x, yv.x, alpha, beta), axpby1(xv.y, yv.y, alpha, beta),
                      axpby1(xv.z, yv.z, alpha, beta), axpby1(xv.w, yv.w, alpha, beta));
    }
    done = 4 * n4;
  }
  for (int64_t i = done + tid; i < n; i += stride)
    y[i] = axpby1(x[i], beta == 0.f ? 0.f : y[i], alpha, beta);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

constexpr int kThreads = 256;

}  // namespace

void fill_cuda(float* y, int64_t n, float value) {
  if (n == 0) return;
  const unsigned grid = grid_for((n + 3) / 4, kThreads);
  if (aligned16(y))
    CONVNET_LAUNCH((fill_kernel<true>), grid, kThreads, 0, current_stream(), y, n, value);
  else
    CONVNET_LAUNCH((fill_kernel<false>), grid, kThreads, 0, current_stream(), y, n, value);
}

void axpby_cuda(float* y, const float* x, int64_t n, float alpha, float beta) {
  if (n == 0) return;
  const unsigned grid = grid_for((n + 3) / 4, kThreads);
  if (aligned16(x) && aligned16(y))
    CONVNET_LAUNCH((axpby_kernel<true>), grid, kThreads, 0, current_stream(), y, x, n, alpha,
                   beta);
  else
    CONVNET_LAUNCH((axpby_kernel<false>), grid, kThreads, 0, current_stream(), y, x, n, alpha,
                   beta);
}

}  // namespace convnet
