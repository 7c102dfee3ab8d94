// The direct convolution forward and stride-1 data gradient (conv_fwd_direct_kernels.h): conv_fwd
// and conv_bwd_data variant 6.
#pragma once
#include "conv.h"
#include "epilogue.h"

namespace convnet {

// y (F, Ho, Wo, N) = [y +] conv(x, w), then the epilogue, on the process's SIMD path (cpu_isa()).
void conv_fwd_direct(const ConvParams& p, const float* x, const float* w, float* y,
                     bool accumulate, const Epilogue& epi);
// dx (C, H, W, N) [+]= the data gradient of a stride-1 convolution, the same way.
void conv_bwd_data_direct(const ConvParams& p, const float* dy, const float* w, float* dx,
                          bool accumulate);

}  // namespace convnet
