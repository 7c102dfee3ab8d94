// One filter's row of the fused ReLU + bias backward (relu_bias.cpp), for the CPU kernels that
// end with it: relu_bias_bwd, and the pooling backward that fuses it (pool_kernels.h).
#pragma once
#include <cstdint>

namespace convnet {

// dy[0, n) masked in place by y > 0; *sum = their sum in relu_bias.cpp's fixed 16-lane order.
// Runs the build of the SIMD path in use (cpu_isa()).
void relu_bias_row(float* dy, const float* y, int64_t n, float* sum);

// *sum = the sum of dy[0, n), already masked, in relu_bias_row's order (the same bits).
void bias_row(const float* dy, int64_t n, float* sum);

}  // namespace convnet
