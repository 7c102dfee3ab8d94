// The Winograd tile transforms of winograd_kernels.h compiled for AVX-512 (chosen by winograd.cpp),
// and the weight gradient's dot products of winograd_dots.h.
#include "winograd_dots.h"
#include "winograd_kernels.h"

namespace convnet {
CONVNET_WINOGRAD_ENTRY_POINTS(avx512, CONVNET_DEFINE_ENTRY)
}  // namespace convnet
