// The direct convolution forward of conv_fwd_direct_kernels.h compiled for AVX2 (chosen by
// conv_fwd_direct.cpp).
#include "conv_fwd_direct_kernels.h"

namespace convnet {
CONVNET_FWD_DIRECT_ENTRY_POINTS(avx2, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
