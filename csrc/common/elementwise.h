// Elementwise helpers the layer graph needs: fill, and y = alpha*x + beta*y (copy, scale, and the
// sum of the gradients a layer receives from several consumers). Any length, any layout
// (the buffers are treated as flat arrays of n floats).
#pragma once
#include "op.h"

namespace convnet {

CONVNET_OP(void, fill, (float* y, int64_t n, float value))
// y = alpha * x + beta * y; beta == 0 never reads y (it may hold NaN). x may equal y.
CONVNET_OP(void, axpby, (float* y, const float* x, int64_t n, float alpha, float beta))

}  // namespace convnet
