// Dropout on the CPU. Philox costs ~10 rounds of 32x32->64-bit multiplies per 4 units, which
// would dominate a scalar loop, so the mask loop is written for the vectoriser (one Philox block
// per iteration, no branches) and compiled for each SIMD path (isa_variants.h).
#include "dropout.h"

#include <cstring>

#include "isa_variants.h"
#include "parallel.h"

namespace convnet {
namespace {

// mask[4b .. 4b+3] for blocks [lo, hi): 1 where the unit is kept.
CONVNET_BODY void draw_mask_blocks_body(uint8_t* mask, int64_t lo, int64_t hi, uint64_t seed,
                                        uint32_t stream, uint32_t step, uint32_t threshold) {
#pragma omp simd
  for (int64_t b = lo; b < hi; ++b) {
    Philox4 r = philox_block(seed, stream, step, uint64_t(b));
    uint32_t word = uint32_t(r.v[0] < threshold) | uint32_t(r.v[1] < threshold) << 8 |
                    uint32_t(r.v[2] < threshold) << 16 | uint32_t(r.v[3] < threshold) << 24;
    std::memcpy(mask + 4 * b, &word, 4);  // little-endian: byte j is unit 4b + j
  }
}
CONVNET_ISA_VARIANTS(draw_mask_blocks,
                     (uint8_t* mask, int64_t lo, int64_t hi, uint64_t seed, uint32_t stream,
                      uint32_t step, uint32_t threshold),
                     (mask, lo, hi, seed, stream, step, threshold))

// y (+)= x * scale where mask[i], else (+)= 0. Branch-free (a random mask would mispredict every
// other branch): the byte becomes an all-ones / all-zeros bit mask over the float, which also
// gives exactly 0 for a dropped inf or NaN.
CONVNET_BODY void apply_mask_body(const float* x, const uint8_t* mask, float* y, int64_t lo,
                                  int64_t hi, float scale, bool accumulate) {
  auto masked = [scale](float v, uint8_t m) {
    float s = v * scale;
    uint32_t bits;
    std::memcpy(&bits, &s, 4);
    bits &= 0u - uint32_t(m);
    std::memcpy(&s, &bits, 4);
    return s;
  };
  if (accumulate) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) y[i] += masked(x[i], mask[i]);
  } else {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) y[i] = masked(x[i], mask[i]);
  }
}
CONVNET_ISA_VARIANTS(apply_mask,
                     (const float* x, const uint8_t* mask, float* y, int64_t lo, int64_t hi,
                      float scale, bool accumulate),
                     (x, mask, y, lo, hi, scale, accumulate))

}  // namespace

void dropout_fwd_cpu(const DropoutParams& p, const float* x, float* y, uint8_t* mask, int64_t n) {
  const uint32_t threshold = keep_threshold(p.keep);
  const float scale = p.inverted ? 1.f / p.keep : 1.f;
  const int64_t full = n / 4;  // whole Philox blocks; the last partial one is done below
  parallel_range(full, [&](int64_t lo, int64_t hi) {
    if (threshold == 0xFFFFFFFFu)
      std::memset(mask + 4 * lo, 1, size_t(4 * (hi - lo)));
    else
      draw_mask_blocks(mask, lo, hi, p.seed, p.stream, p.step, threshold);
    apply_mask(x, mask, y, 4 * lo, 4 * hi, scale, false);
  }, 1 << 12);
  for (int64_t i = 4 * full; i < n; ++i) {
    mask[i] = keep_unit(philox_word(p.seed, p.stream, p.step, uint64_t(i)), threshold) ? 1 : 0;
    y[i] = mask[i] ? x[i] * scale : 0.f;
  }
}

void dropout_bwd_cpu(const DropoutParams& p, const float* dy, const uint8_t* mask, float* dx,
                     int64_t n, bool accumulate) {
  const float scale = p.inverted ? 1.f / p.keep : 1.f;
  parallel_range(n, [&](int64_t lo, int64_t hi) {
    apply_mask(dy, mask, dx, lo, hi, scale, accumulate);
  });
}

}  // namespace convnet
