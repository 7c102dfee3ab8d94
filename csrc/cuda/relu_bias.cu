// The fused ReLU + bias backward (declared in csrc/common/relu_bias.h): one block per filter row
// (grid-strided over filters past 65535). Each thread masks its strided elements of the row in
// place, as neuron_bwd's relu does (dy * float(y > 0): the same bits), and keeps their partial
// sum; a shared-memory tree adds the partials, bias_bwd's fixed order, so the result is
// deterministic without atomics. pool_bwd_relu_bias runs the pooling's kernel, then this one.
#include <algorithm>

#include "cuda_check.h"
#include "neuron.h"
#include "relu_bias.h"

namespace convnet {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    relu_bias_bwd_kernel(float* __restrict__ dy, const float* __restrict__ y,
                         float* __restrict__ db, int64_t filters, int64_t per, bool accumulate) {
  __shared__ float part[kThreads];
  for (int64_t f = blockIdx.x; f < filters; f += gridDim.x) {
    float* row = dy + f * per;
    const float* yrow = y + f * per;
    float sum = 0.f;
    for (int64_t i = threadIdx.x; i < per; i += kThreads) {
      const float g = row[i] * Neuron<NeuronKind::relu>::grad(yrow[i], yrow[i], 0.f, 0.f);
      row[i] = g;
      sum += g;
    }
    part[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (int(threadIdx.x) < half) part[threadIdx.x] += part[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) db[f] = accumulate ? db[f] + part[0] : part[0];
    __syncthreads();  // part[] is rewritten for the next filter
  }
}

}  // namespace

void relu_bias_bwd_cuda(float* dy, const float* y, float* db, int64_t filters, int64_t per_filter,
                        bool accumulate) {
  if (filters == 0) return;
  CONVNET_LAUNCH(relu_bias_bwd_kernel, unsigned(std::min<int64_t>(filters, 65535)), kThreads, 0,
                 current_stream(), dy, y, db, filters, per_filter, accumulate);
}

// Two launches on the stream, the pooling's then the mask and sum: no fused kernel on the GPU.
void pool_bwd_relu_bias_cuda(const PoolParams& p, const float* dy, const float* x, const float* y,
                             float* dx, float* db) {
  pool_bwd_cuda(p, dy, x, y, dx, false);
  relu_bias_bwd_cuda(dx, x, db, p.channels, int64_t(p.height) * p.width * p.images, false);
}

}  // namespace convnet
