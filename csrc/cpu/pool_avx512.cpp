// The pooling kernels of pool_kernels.h compiled for AVX-512 (chosen by pool.cpp).
#include "pool_kernels.h"

namespace convnet {
CONVNET_POOL_ENTRY_POINTS(avx512, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
