// The elementwise step of cuda-convnet's contrast normalisation (`cnorm`), which convnet/ops
// composes from average pooling, axpby and same-map response normalisation:
//   m      = x - mean of x over the size x size window (avg pooling, stride 1, same size)
//   denoms = min_div + alpha * (sum of m^2 over the window)            (rnorm_fwd of m)
//   y      = x * denoms^(-pow)                                          (this op)
// The backward's dy * denoms^(-pow) term is this op too. All buffers are n floats, any layout.
#pragma once
#include "op.h"

namespace convnet {

// y = x * denoms^(-pow); x may equal y.
CONVNET_OP(void, scale_by_denoms, (const float* x, const float* denoms, float* y, int64_t n,
                                   float pow))

}  // namespace convnet
