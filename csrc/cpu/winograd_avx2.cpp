// The Winograd tile transforms of winograd_kernels.h compiled for AVX2 (chosen by winograd.cpp).
#include "winograd_kernels.h"

namespace convnet {
CONVNET_WINOGRAD_ENTRY_POINTS(avx2, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
