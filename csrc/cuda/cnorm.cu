// The elementwise step of contrast normalisation (declared in csrc/common/cnorm.h).
#include "cnorm.h"
#include "cuda_check.h"
#include "grid_stride.cuh"
#include "index_width.cuh"

namespace convnet {
namespace {

// y = x * denoms^-pow over n flat floats (grid_stride.cuh: float4 groups when every buffer is
// 16-byte aligned, the same powf per element either way; I the index type).
template <bool kVec4, class I>
__global__ void scale_by_denoms_kernel(const float* x, const float* denoms, float* y, I n,
                                       float pow) {
  grid_stride_vec4<kVec4>(
      n,
      [&](I i) {
        const float4 xv = reinterpret_cast<const float4*>(x)[i];
        const float4 dv = reinterpret_cast<const float4*>(denoms)[i];
        reinterpret_cast<float4*>(y)[i] =
            make_float4(xv.x * powf(dv.x, -pow), xv.y * powf(dv.y, -pow),
                        xv.z * powf(dv.z, -pow), xv.w * powf(dv.w, -pow));
      },
      [&](I j) { y[j] = x[j] * powf(denoms[j], -pow); });
}

}  // namespace

void scale_by_denoms_cuda(const float* x, const float* denoms, float* y, int64_t n, float pow) {
  if (n == 0) return;
  const bool vec = aligned16(x) && aligned16(denoms) && aligned16(y);
  const unsigned grid = vec ? grid_for_quads(n, 256) : grid_for(n, 256);
  with_index(n + int64_t(grid) * 256, [&](auto index) {
    using I = decltype(index);
    if (vec)
      CONVNET_LAUNCH((scale_by_denoms_kernel<true, I>), grid, 256, 0, current_stream(), x,
                     denoms, y, I(n), pow);
    else
      CONVNET_LAUNCH((scale_by_denoms_kernel<false, I>), grid, 256, 0, current_stream(), x,
                     denoms, y, I(n), pow);
  });
}

}  // namespace convnet
