// The inner-product FC data gradient of fc_dot_kernels.h compiled for AVX512 (chosen by
// fc_dot.cpp).
#include "fc_dot_kernels.h"

namespace convnet {
CONVNET_FC_DOT_ENTRY_POINTS(avx512, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
