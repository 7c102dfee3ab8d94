// The direct convolution forward and data gradient (conv_fwd_direct_kernels.h): the AVX-512 or AVX2 build on those
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

void conv_bwd_data_direct(const ConvParams& p, const float* dy, const float* w, float* dx,
                          bool accumulate) {
  if (cpu_isa() == Isa::avx512) return avx512::conv_bwd_data_direct(p, dy, w, dx, accumulate);
  if (cpu_isa() == Isa::avx2) return avx2::conv_bwd_data_direct(p, dy, w, dx, accumulate);
  conv_bwd_data_direct_impl(p, dy, w, dx, accumulate);
}

}  // namespace convnet
