// The elementwise step of contrast normalisation (declared in csrc/common/cnorm.h).
#include "cnorm.h"
#include "cuda_check.h"

namespace convnet {
namespace {

// Thread per element (grid-stride over n): flat buffers, coalesced.
__global__ void scale_by_denoms_kernel(const float* x, const float* denoms, float* y, int64_t n,
                                       float pow) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[i] * powf(denoms[i], -pow);
}

}  // namespace

void scale_by_denoms_cuda(const float* x, const float* denoms, float* y, int64_t n, float pow) {
  if (n == 0) return;
  CONVNET_LAUNCH(scale_by_denoms_kernel, grid_for(n, 256), 256, 0, current_stream(), x, denoms,
                 y, n, pow);
}

}  // namespace convnet
