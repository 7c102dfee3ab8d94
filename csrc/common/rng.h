// Counter-based random numbers shared by every backend (and by convnet/rng.py).
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// A draw is a pure function of (seed, stream, step, index), so the CPU backend, CUDA kernels,
// the emulated kernels and the Python data pipeline produce bit-identical integers for the same
// arguments, in any thread order and with any number of workers.
//
// Naming convention: word `index` of stream (seed, stream, step) is output word index % 4 of
//   philox4x32_10(counter = {block_lo, block_hi, step, stream}, key = {seed_lo, seed_hi})
// where block = index / 4.
#pragma once
#include <cstdint>
#include "hd.h"

namespace convnet {

struct Philox4 {
  uint32_t v[4];
};

CONVNET_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

CONVNET_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                 uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(M0, c0, hi0, lo0);
    philox_mulhilo(M1, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The four consecutive words 4*block .. 4*block+3 of stream (seed, stream, step).
CONVNET_HD Philox4 philox_block(uint64_t seed, uint32_t stream, uint32_t step, uint64_t block) {
  return philox4x32_10(uint32_t(block), uint32_t(block >> 32), step, stream, uint32_t(seed),
                       uint32_t(seed >> 32));
}

CONVNET_HD uint32_t philox_word(uint64_t seed, uint32_t stream, uint32_t step, uint64_t index) {
  return philox_block(seed, stream, step, index >> 2).v[index & 3];
}

// Uniform in [0, 1) with 24 random bits: exact in float32 on every backend.
CONVNET_HD float uniform_from_word(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }

// Dropout keeps a unit when its word is below this threshold: an integer comparison, so the
// mask is identical on every backend (no float rounding involved). keep in [0, 1].
CONVNET_HD uint32_t keep_threshold(float keep) {
  // 2^32 * keep, saturated: keep == 1 keeps every unit.
  double t = double(keep) * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : uint32_t(t);
}
CONVNET_HD bool keep_unit(uint32_t w, uint32_t threshold) {
  return threshold == 0xFFFFFFFFu || w < threshold;
}

// Stream ids: the high byte names the purpose, the low bits the layer (or worker) index.
enum RngPurpose : uint32_t {
  kRngInit = 1u << 24,      // initial weights (drawn on the host, copied to any device)
  kRngDropout = 2u << 24,   // dropout masks, step = training step
  kRngAugment = 3u << 24,   // crops, flips, colour noise, step = epoch
  kRngShuffle = 4u << 24,   // data order, step = epoch
};

}  // namespace convnet
