// The direct convolution weight gradient (conv_wgrad_kernels.h): the AVX-512 or AVX2 build on
// those CPU paths, the baseline build otherwise.
#include "conv_wgrad.h"

#include "conv_wgrad_kernels.h"
#include "isa.h"

namespace convnet {

void conv_bwd_weights_direct(const ConvParams& p, const float* x, const float* dy, float* dw,
                             bool accumulate) {
  if (cpu_isa() == Isa::avx512) return avx512::conv_bwd_weights_direct(p, x, dy, dw, accumulate);
  if (cpu_isa() == Isa::avx2) return avx2::conv_bwd_weights_direct(p, x, dy, dw, accumulate);
  conv_bwd_weights_direct_impl(p, x, dy, dw, accumulate);
}

}  // namespace convnet
