// The pooling kernels of pool_kernels.h compiled for AVX2+FMA (chosen by pool.cpp).
#include "pool_kernels.h"

namespace convnet {
CONVNET_POOL_ENTRY_POINTS(avx2, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
