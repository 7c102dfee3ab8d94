// The paper's update on the GPU (declared in csrc/common/sgd.h): one pass, w and v rewritten in
// place. Thread mapping: grid-stride over groups of 4 weights, float4 loads and stores when w, v
// and grad are 16-byte aligned (kVec4), the n % 4 trailing weights to the first threads.
// Products use __fmul_rn (never fused into an FMA) so the result is bit-identical to the CPU's.
#include "cuda_check.h"
#include "sgd.h"

namespace convnet {
namespace {

__device__ __forceinline__ void sgd1(float& w, float& v, float g, float mom, float lr,
                                     float lrwd) {
  v = sgd_velocity(v, w, g, mom, lr, lrwd);
  w = w + v;
}

template <bool kVec4>
__global__ void sgd_update_kernel(float* w, float* v, const float* grad, int64_t n, float lr,
                                  float mom, float lrwd) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 wv = reinterpret_cast<float4*>(w)[i];
      float4 vv = reinterpret_cast<float4*>(v)[i];
      const float4 g = reinterpret_cast<const float4*>(grad)[i];
      sgd1(wv.x, vv.x, g.x, mom, lr, lrwd);
      sgd1(wv.y, vv.y, g.y, mom, lr, lrwd);
      sgd1(wv.z, vv.z, g.z, mom, lr, lrwd);
      sgd1(wv.w, vv.w, g.w, mom, lr, lrwd);
      reinterpret_cast<float4*>(w)[i] = wv;
      reinterpret_cast<float4*>(v)[i] = vv;
    }
    done = 4 * n4;
  }
  for (int64_t i = done + tid; i < n; i += stride) sgd1(w[i], v[i], grad[i], mom, lr, lrwd);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

void sgd_update_cuda(const SgdParams& p, float* w, float* v, const float* grad, int64_t n) {
  if (n == 0) return;
  const float lrwd = p.lr * p.weight_decay;  // rounded once, on the host, as on the CPU
  const int threads = 256;
  unsigned grid = grid_for((n + 3) / 4, threads);
  if (aligned16(w) && aligned16(v) && aligned16(grad))
    CONVNET_LAUNCH((sgd_update_kernel<true>), grid, threads, 0, current_stream(), w, v, grad, n,
                   p.lr, p.momentum, lrwd);
  else
    CONVNET_LAUNCH((sgd_update_kernel<false>), grid, threads, 0, current_stream(), w, v, grad, n,
                   p.lr, p.momentum, lrwd);
}

}  // namespace convnet
