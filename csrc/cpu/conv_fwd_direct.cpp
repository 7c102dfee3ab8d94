// The direct convolution forward (conv_fwd_direct_kernels.h): the AVX-512 or AVX2 build on those
// CPU paths, the baseline build otherwise.
#include "conv_fwd_direct.h"

#include "conv_fwd_direct_kernels.h"
#include "isa.h"

namespace convnet {

void conv_fwd_direct(const ConvParams& p, const float* x, const float* w, float* y,
                     bool accumulate, const Epilogue& epi) {
  if (cpu_isa() == Isa::avx512) return avx512::conv_fwd_direct(p, x, w, y, accumulate, epi);
  if (cpu_isa() == Isa::avx2) return avx2::conv_fwd_direct(p, x, w, y, accumulate, epi);
  conv_fwd_direct_impl(p, x, w, y, accumulate, epi);
}

}  // namespace convnet
