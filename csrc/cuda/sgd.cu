// The paper's update on the GPU (declared in csrc/common/sgd.h): one pass, w and v rewritten in
// place. Thread mapping: grid_stride.cuh (groups of 4 weights as float4 when w, v and grad are
// 16-byte aligned, then the n % 4 trailing weights).
// Products use __fmul_rn (never fused into an FMA) so the result is bit-identical to the CPU's.
#include "cuda_check.h"
#include "grid_stride.cuh"
#include "index_width.cuh"
#include "sgd.h"

namespace convnet {
namespace {

__device__ __forceinline__ void sgd1(float& w, float& v, float g, float mom, float lr,
                                     float lrwd) {
  v = sgd_velocity(v, w, g, mom, lr, lrwd);
  w = w + v;
}

template <bool kVec4, class I>
__global__ void sgd_update_kernel(float* w, float* v, const float* grad, I n, float lr,
                                  float mom, float lrwd) {
  grid_stride_vec4<kVec4>(
      n,
      [&](I i) {
        float4 wv = reinterpret_cast<float4*>(w)[i];
        float4 vv = reinterpret_cast<float4*>(v)[i];
        const float4 g = reinterpret_cast<const float4*>(grad)[i];
        sgd1(wv.x, vv.x, g.x, mom, lr, lrwd);
        sgd1(wv.y, vv.y, g.y, mom, lr, lrwd);
        sgd1(wv.z, vv.z, g.z, mom, lr, lrwd);
        sgd1(wv.w, vv.w, g.w, mom, lr, lrwd);
        reinterpret_cast<float4*>(w)[i] = wv;
        reinterpret_cast<float4*>(v)[i] = vv;
      },
      [&](I j) { sgd1(w[j], v[j], grad[j], mom, lr, lrwd); });
}

}  // namespace

void sgd_update_cuda(const SgdParams& p, float* w, float* v, const float* grad, int64_t n) {
  if (n == 0) return;
  const float lrwd = p.lr * p.weight_decay;  // rounded once, on the host, as on the CPU
  const int threads = 256;
  const unsigned grid = grid_for_quads(n, threads);
  with_index(n + int64_t(grid) * threads, [&](auto index) {
    using I = decltype(index);
    if (aligned16(w) && aligned16(v) && aligned16(grad))
      CONVNET_LAUNCH((sgd_update_kernel<true, I>), grid, threads, 0, current_stream(), w, v, grad,
                     I(n), p.lr, p.momentum, lrwd);
    else
      CONVNET_LAUNCH((sgd_update_kernel<false, I>), grid, threads, 0, current_stream(), w, v,
                     grad, I(n), p.lr, p.momentum, lrwd);
  });
}

}  // namespace convnet
