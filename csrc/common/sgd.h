// The paper's update (Krizhevsky et al. 2012, section 5), one pass over a parameter buffer:
//
//   v <- momentum * v - (weight_decay * lr) * w - lr * dL/dw
//   w <- w + v
//
//   w, v, grad : any shape, flat arrays of n floats; grad is the gradient of the LOSS (the
//                batch-mean cost), v the momentum buffer (zeros at the start).
//   Biases: weight_decay = 0 (the paper decays weights only).
//
// cuda-convnet2 writes inc = mom * inc + eps * (g - wc * w), w += inc, with g the gradient of the
// log-probability (= -dL/dw): the same update with v = inc, lr = eps, weight_decay = wc.
//
// Rounding is specified, so every backend gives the same bits: each product and difference is
// rounded to float32 in this order, with no fused multiply-add:
//   lrwd = float(lr * weight_decay)   (once, on the host)
//   v' = ((momentum * v) - (lrwd * w)) - (lr * grad)
//   w' = w + v'
#pragma once
#include "op.h"

namespace convnet {

struct SgdParams {
  float lr = 0.01f;
  float momentum = 0.9f;
  float weight_decay = 0.0005f;
};

// Products and sums that no compiler may fuse into an FMA (the rounding above is part of the spec).
CONVNET_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  float r = a * b;
#if defined(__FMA__) || defined(CONVNET_SIMT)
  asm("" : "+x"(r));  // an opaque value: the optimiser cannot contract it into an FMA
#endif
  return r;
#endif
}

CONVNET_HD float sgd_velocity(float v, float w, float g, float momentum, float lr, float lrwd) {
  return (mul_rn(momentum, v) - mul_rn(lrwd, w)) - mul_rn(lr, g);
}

CONVNET_OP(void, sgd_update, (const SgdParams& p, float* w, float* v, const float* grad,
                              int64_t n))

}  // namespace convnet
