// Fully-connected layers (cuda-convnet's `fc`), activations (features, images):
//   x : (I, N)   inputs, image index innermost
//   w : (I, O)   weights
//   y : (O, N)   y = w^T x, then the epilogue (epilogue.h): y = act(y + b), b (O,) biases
// With `accumulate` the result is added to the output (a layer with several inputs sums
// w_i^T x_i; a layer whose output feeds several consumers sums their gradients).
// The bias gradient is bias_bwd (conv.h) with filters = O, per_filter = N.
#pragma once
#include "conv.h"
#include "op.h"

namespace convnet {

struct FcParams {
  int64_t inputs = 0, outputs = 0, images = 0;  // I, O, N
  int variant = 0;                              // 0 = default; see conv_variant_count
};

CONVNET_OP(void, fc_fwd, (const FcParams& p, const float* x, const float* w, float* y,
                          bool accumulate, const Epilogue& epi))
// dx (I, N) (+)= w dy
CONVNET_OP(void, fc_bwd_data, (const FcParams& p, const float* dy, const float* w, float* dx,
                               bool accumulate))
// dw (I, O) (+)= x dy^T
CONVNET_OP(void, fc_bwd_weights, (const FcParams& p, const float* x, const float* dy, float* dw,
                                  bool accumulate))

}  // namespace convnet
