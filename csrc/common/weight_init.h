// Reproducible initial weights: Gaussian draws from the shared Philox RNG (rng.h), made on the
// host and copied to any device, so a net starts from the same bits on every backend.
//
// Element i of (seed, stream) is float32(std * z_i), z_i the standard normal of convnet/rng.py's
// normal(seed, stream, step = 0, i): Box-Muller on words 2i and 2i+1 (cosine branch only, so every
// element has its own pair of words), in double precision:
//   u1 = (word(2i) + 1) / 2^32   in (0, 1]  (log is finite)
//   u2 =  word(2i+1)    / 2^32   in [0, 1)
//   z_i = sqrt(-2 ln u1) * cos(2 pi u2)
// A Python (numpy) reimplementation matches bit for bit unless its log/cos differ from the C
// library's in the last bit of a double AND that moves the float32 rounding (rare).
#pragma once
#include <cstdint>

namespace convnet {

// w: n floats (any shape), filled with N(0, std^2) draws as above. Host memory.
void gaussian_fill_host(float* w, int64_t n, double std, uint64_t seed, uint32_t stream);

}  // namespace convnet
