// Dropout, with masks drawn from the shared counter-based RNG (rng.h), so every backend draws the
// same mask for the same (seed, stream, step).
//
//   x, y, dy, dx : any shape, flat arrays of n floats (in practice FC activations (features, N)).
//   mask         : n bytes, same element order: 1 = unit kept, 0 = dropped.
//
// Unit i is kept iff keep_unit(philox_word(seed, stream, step, i), keep_threshold(keep)): an
// integer comparison, bit-identical on every backend and in convnet's Python port of Philox.
// Streams: kRngDropout | layer index; step: the training step (a new mask every step).
//
// Two variants (cuda-convnet's layer types):
//   inverted (`dropout`):  train y = x * mask / keep,  test y = x
//   paper    (`dropout2`): train y = x * mask,         test y = x * keep   (Krizhevsky et al. 4.2)
// Backward reuses the forward's mask: dx (+)= dy * mask * (inverted ? 1/keep : 1).
#pragma once
#include "op.h"
#include "rng.h"

namespace convnet {

struct DropoutParams {
  float keep = 0.5f;  // probability of keeping a unit, in (0, 1]
  bool inverted = true;
  uint64_t seed = 0;
  uint32_t stream = kRngDropout;
  uint32_t step = 0;
};

// Training forward: draws the mask, writes y and mask. x may equal y.
CONVNET_OP(void, dropout_fwd, (const DropoutParams& p, const float* x, float* y, uint8_t* mask,
                               int64_t n))
// dx = dy * mask * scale (accumulate: dx += ...); scale = 1/keep when inverted, else 1.
CONVNET_OP(void, dropout_bwd, (const DropoutParams& p, const float* dy, const uint8_t* mask,
                               float* dx, int64_t n, bool accumulate))

}  // namespace convnet
