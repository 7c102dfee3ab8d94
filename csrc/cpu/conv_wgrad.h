// The direct weight gradient of a convolution (conv_wgrad_kernels.h): conv_bwd_weights variant 5.
#pragma once
#include "conv.h"

namespace convnet {

// dw (C/groups, fs, fs, F) (+)= the weight gradient, on the process's SIMD path (cpu_isa()).
void conv_bwd_weights_direct(const ConvParams& p, const float* x, const float* dy, float* dw,
                             bool accumulate);

}  // namespace convnet
