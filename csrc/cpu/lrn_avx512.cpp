// The normalisation kernels of lrn_kernels.h compiled for AVX-512 (chosen by lrn.cpp).
#include "lrn_kernels.h"

namespace convnet {
CONVNET_NORM_ENTRY_POINTS(avx512, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
