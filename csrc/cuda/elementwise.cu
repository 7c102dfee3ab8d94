// Elementwise helpers (declared in csrc/common/elementwise.h).
// Thread mapping: grid_stride.cuh (float4 groups where aligned, then the scalar tail).
#include "cuda_check.h"
#include "elementwise.h"
#include "grid_stride.cuh"
#include "index_width.cuh"

namespace convnet {
namespace {

__device__ __forceinline__ float axpby1(float x, float y, float alpha, float beta) {
  return beta == 0.f ? alpha * x : alpha * x + beta * y;
}

template <bool kVec4, class I>
__global__ void fill_kernel(float* y, I n, float value) {
  const float4 v = make_float4(value, value, value, value);
  grid_stride_vec4<kVec4>(
      n, [&](I i) { reinterpret_cast<float4*>(y)[i] = v; }, [&](I j) { y[j] = value; });
}

// beta == 0 never reads y (it may hold NaN).
template <bool kVec4, class I>
__global__ void axpby_kernel(float* y, const float* x, I n, float alpha, float beta) {
  grid_stride_vec4<kVec4>(
      n,
      [&](I i) {
        const float4 xv = reinterpret_cast<const float4*>(x)[i];
        const float4 yv = beta == 0.f ? make_float4(0.f, 0.f, 0.f, 0.f)
                                      : reinterpret_cast<const float4*>(y)[i];
        reinterpret_cast<float4*>(y)[i] =
            make_float4(axpby1(xv.x, yv.x, alpha, beta), axpby1(xv.y, yv.y, alpha, beta),
                        axpby1(xv.z, yv.z, alpha, beta), axpby1(xv.w, yv.w, alpha, beta));
      },
      [&](I j) { y[j] = axpby1(x[j], beta == 0.f ? 0.f : y[j], alpha, beta); });
}

constexpr int kThreads = 256;

}  // namespace

void fill_cuda(float* y, int64_t n, float value) {
  if (n == 0) return;
  const unsigned grid = grid_for_quads(n, kThreads);
  with_index(n + int64_t(grid) * kThreads, [&](auto index) {
    using I = decltype(index);
    if (aligned16(y))
      CONVNET_LAUNCH((fill_kernel<true, I>), grid, kThreads, 0, current_stream(), y, I(n), value);
    else
      CONVNET_LAUNCH((fill_kernel<false, I>), grid, kThreads, 0, current_stream(), y, I(n),
                     value);
  });
}

void axpby_cuda(float* y, const float* x, int64_t n, float alpha, float beta) {
  if (n == 0) return;
  const unsigned grid = grid_for_quads(n, kThreads);
  with_index(n + int64_t(grid) * kThreads, [&](auto index) {
    using I = decltype(index);
    if (aligned16(x) && aligned16(y))
      CONVNET_LAUNCH((axpby_kernel<true, I>), grid, kThreads, 0, current_stream(), y, x, I(n),
                     alpha, beta);
    else
      CONVNET_LAUNCH((axpby_kernel<false, I>), grid, kThreads, 0, current_stream(), y, x, I(n),
                     alpha, beta);
  });
}

}  // namespace convnet
