// The direct convolution forward (conv_fwd_direct_kernels.h): conv_fwd variant 6.
#pragma once
#include "conv.h"
#include "epilogue.h"

namespace convnet {

// y (F, Ho, Wo, N) = [y +] conv(x, w), then the epilogue, on the process's SIMD path (cpu_isa()).
void conv_fwd_direct(const ConvParams& p, const float* x, const float* w, float* y,
                     bool accumulate, const Epilogue& epi);

}  // namespace convnet
