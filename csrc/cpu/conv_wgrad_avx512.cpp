// The direct convolution weight gradient of conv_wgrad_kernels.h compiled for AVX-512 (chosen by
// conv_wgrad.cpp).
#include "conv_wgrad_kernels.h"

namespace convnet {
CONVNET_WGRAD_ENTRY_POINTS(avx512, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
