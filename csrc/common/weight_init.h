// Reproducible initial weights: Gaussian draws from the shared Philox RNG (rng.h), made on the
// host and copied to any device, so a net starts from the same bits on every backend.
//
// Element i of a buffer with stream s (kRngInit | layer index) and seed:
//   words  w0..w3 = philox_block(seed, s, step = 0, block = i / 4)
//   pair   (w0, w1) gives elements 4b, 4b+1; (w2, w3) gives 4b+2, 4b+3 (Box-Muller):
//     u1 = ((w_even >> 8) + 1) / 2^24   in (0, 1]  (never 0: log is finite)
//     u2 =  (w_odd  >> 8)      / 2^24   in [0, 1)
//     r = sqrt(-2 ln u1), t = 2 pi u2   (in double precision)
//     element 4b+2j   = float(std * r * cos t)
//     element 4b+2j+1 = float(std * r * sin t)
#pragma once
#include <cstdint>

namespace convnet {

// w: n floats (any shape), filled with N(0, std^2) draws as above. Host memory.
void gaussian_fill_host(float* w, int64_t n, float std, uint64_t seed, uint32_t stream);

}  // namespace convnet
