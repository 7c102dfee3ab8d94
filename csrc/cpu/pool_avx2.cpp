// The pooling kernels of pool_kernels.h compiled for AVX2+FMA (chosen by pool.cpp).
#include "pool_kernels.h"

namespace convnet {
namespace avx2 {

void pool_fwd(const PoolParams& p, const float* x, float* y) { pool_fwd_impl(p, x, y); }

void pool_bwd(const PoolParams& p, const float* dy, const float* x, const float* y, float* dx,
              bool accumulate) {
  pool_bwd_impl(p, dy, x, y, dx, accumulate);
}

}  // namespace avx2
}  // namespace convnet
