// The backward pass of a layer whose forward fuses bias + ReLU into its store (conv with shared
// biases, fc; neuron=relu): the ReLU's gradient and the bias gradient in one pass over dy, where
// neuron_bwd then bias_bwd read dy twice and write it once (16 MB each way in the CIFAR net's
// conv1 at batch 128, more than the L2 holds).
//
//   dy (F, P)  in place: dy[f, i] = y[f, i] > 0 ? dy[f, i] : +0   (neuron_bwd's relu, same bits)
//   y  (F, P)  the layer's output after the ReLU
//   db (F)     (+)= sum over i of the masked dy[f, i]
//
// P = positions x images (conv) or images (fc). Each db[f] is summed by one thread in a fixed
// order (the backend's comment says which), so the bits do not depend on the thread count.
#pragma once
#include "op.h"
#include "pool.h"

namespace convnet {

CONVNET_OP(void, relu_bias_bwd, (float* dy, const float* y, float* db, int64_t filters,
                                 int64_t per_filter, bool accumulate))

// pool_bwd (writing dx, never adding) for a pool whose input x is a layer's output after its
// fused bias + ReLU, and whose dx is that layer's whole gradient; then relu_bias_bwd(dx, x, db)
// with filters = channels. The same bits as the two ops one after the other; the CPU masks and
// sums each channel right after its plane of dx is done, while it is still in cache.
CONVNET_OP(void, pool_bwd_relu_bias, (const PoolParams& p, const float* dy, const float* x,
                                      const float* y, float* dx, float* db))
// The same from max pooling's winners (pool.h), reading neither x nor y: a window whose winner
// fails the ReLU's mask (kPoolNotPositive) routes nothing; the same bits as pool_bwd_relu_bias.
CONVNET_OP(void, pool_bwd_winners_relu_bias, (const PoolParams& p, const float* dy,
                                              const uint8_t* winners, float* dx, float* db))

}  // namespace convnet
