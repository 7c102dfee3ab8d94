// The fused pooling + ReLU + bias backward on the GPU (declared in csrc/common/relu_bias.h): the
// pooling's kernel, then the fused ReLU + bias backward (bias.cu's bias-gradient kernel with the
// ReLU mask), two launches on the stream: no fused kernel on the GPU.
#include "pool.h"
#include "relu_bias.h"

namespace convnet {

void pool_bwd_relu_bias_cuda(const PoolParams& p, const float* dy, const float* x, const float* y,
                             float* dx, float* db) {
  pool_bwd_cuda(p, dy, x, y, dx, false);
  relu_bias_bwd_cuda(dx, x, db, p.channels, int64_t(p.height) * p.width * p.images, false);
}

}  // namespace convnet
