// Elementwise helpers (declared in csrc/common/elementwise.h).
// Thread mapping: grid-stride loop, one float per thread per iteration.
#include "cuda_check.h"
#include "elementwise.h"

namespace convnet {

__global__ void fill_kernel(float* y, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = value;
}

__global__ void axpby_kernel(float* y, const float* x, int64_t n, float alpha, float beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = beta == 0.f ? alpha * x[i] : alpha * x[i] + beta * y[i];
}

void fill_cuda(float* y, int64_t n, float value) {
  if (n == 0) return;
  CONVNET_LAUNCH(fill_kernel, grid_for(n, 256), 256, 0, current_stream(), y, n, value);
}

void axpby_cuda(float* y, const float* x, int64_t n, float alpha, float beta) {
  if (n == 0) return;
  CONVNET_LAUNCH(axpby_kernel, grid_for(n, 256), 256, 0, current_stream(), y, x, n, alpha, beta);
}

}  // namespace convnet
