// Dropout on the CPU. Philox costs 10 rounds of two 32x32->64-bit multiplies per 4 units, which
// bounds the forward pass, so the AVX-512 and AVX2 paths run it by hand across SIMD lanes (one
// Philox block per 64-bit lane pair on AVX-512, per 32-bit lane on AVX2) fused with the
// masking: x is read and y and the mask written in one pass. The portable path keeps a loop
// written for the vectoriser (one block per iteration) and a second pass over x. All paths give
// the words of rng.h's philox4x32_10 bit for bit.
#include "dropout.h"

#include <immintrin.h>

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

// ---- Philox across SIMD lanes (block b + i in lane i), bit-identical to rng.h's philox4x32_10.

CONVNET_TARGET_AVX2 inline __attribute__((always_inline)) __m256i mulhi_avx2(__m256i a,
                                                                            __m256i m) {
  __m256i even = _mm256_mul_epu32(a, m);
  __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}
// 1 << bit where c < threshold (thr and sign: the threshold and 2^31 in every lane, thr offset by
// 2^31 already: AVX2 compares signed only), else 0.
CONVNET_TARGET_AVX2 inline __attribute__((always_inline)) __m256i kept_avx2(__m256i c,
                                                                           __m256i thr,
                                                                           __m256i sign,
                                                                           int bit) {
  __m256i lt = _mm256_cmpgt_epi32(thr, _mm256_xor_si256(c, sign));
  return _mm256_and_si256(lt, _mm256_set1_epi32(1 << bit));
}
// x * scale where the low 8 bytes of `bytes` (0 or 1) are 1, else 0.
CONVNET_TARGET_AVX2 inline __attribute__((always_inline)) __m256 masked_scale_avx2(
    __m256 x, __m128i bytes, __m256 scale) {
  __m256i m = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_cvtepu8_epi32(bytes));
  return _mm256_and_ps(_mm256_mul_ps(x, scale), _mm256_castsi256_ps(m));
}

// Fused forward for blocks [lo, hi): 32 blocks = 128 units per iteration; returns where it
// stopped (the last < 32 blocks are left to the caller). Here a block's counter lives in two
// 64-bit lanes, X = c0 | c1 << 32 and Y = c2 | c3 << 32, so one vpmuludq gives the whole
// 64-bit product M0 c0 = lo0 | hi0 << 32, and a round is
//   X' = rotate(M1 c2, 32) ^ (X >> 32) ^ k0,   Y' = rotate(M0 c0, 32) ^ (Y >> 32) ^ k1
// (4 multiplies per 16 blocks and round, where 32-bit lanes need 6). X starts as the 64-bit
// block number itself. The keep bits of lanes (w0, w1) of X and (w2, w3) of Y are interleaved
// into unit order with pdep (every AVX-512 CPU has BMI2).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2,prefer-vector-width=512")))
int64_t dropout_fwd_avx512(const float* x, float* y, uint8_t* mask, int64_t lo, int64_t hi,
                           uint64_t seed, uint32_t stream, uint32_t step, uint32_t threshold,
                           float scale) {
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53), m1 = _mm512_set1_epi64(0xCD9E8D57);
  __m512i k0[10], k1[10];  // the round keys in the low half of each 64-bit lane
  for (int r = 0; r < 10; ++r) {
    k0[r] = _mm512_set1_epi64(uint32_t(uint32_t(seed) + uint32_t(r) * 0x9E3779B9u));
    k1[r] = _mm512_set1_epi64(uint32_t(uint32_t(seed >> 32) + uint32_t(r) * 0xBB67AE85u));
  }
  const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i y0 = _mm512_set1_epi64(int64_t(uint64_t(step) | uint64_t(stream) << 32));
  const __m512i thr = _mm512_set1_epi32(int(threshold));
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512 vscale = _mm512_set1_ps(scale);
  // Four independent sets of 8 blocks: the rounds are a serial chain of multiplies.
  int64_t b = lo;
  for (; b + 32 <= hi; b += 32) {
    __m512i X[4], Y[4];
    for (int g = 0; g < 4; ++g) {
      X[g] = _mm512_add_epi64(_mm512_set1_epi64(b + 8 * g), lane);
      Y[g] = y0;
    }
    for (int r = 0; r < 10; ++r) {
      for (int g = 0; g < 4; ++g) {
        __m512i p0 = _mm512_mul_epu32(X[g], m0), p1 = _mm512_mul_epu32(Y[g], m1);
        X[g] = _mm512_ternarylogic_epi64(_mm512_ror_epi64(p1, 32), _mm512_srli_epi64(X[g], 32),
                                         k0[r], 0x96);  // three-way xor
        Y[g] = _mm512_ternarylogic_epi64(_mm512_ror_epi64(p0, 32), _mm512_srli_epi64(Y[g], 32),
                                         k1[r], 0x96);
      }
    }
    for (int h = 0; h < 2; ++h) {  // 16 blocks = 64 units
      uint64_t kx = uint64_t(_mm512_cmplt_epu32_mask(X[2 * h], thr)) |
                    uint64_t(_mm512_cmplt_epu32_mask(X[2 * h + 1], thr)) << 16;
      uint64_t ky = uint64_t(_mm512_cmplt_epu32_mask(Y[2 * h], thr)) |
                    uint64_t(_mm512_cmplt_epu32_mask(Y[2 * h + 1], thr)) << 16;
      // Bit 4i + j = unit 4i + j of these 16 blocks kept.
      uint64_t k = _pdep_u64(kx, 0x3333333333333333ull) | _pdep_u64(ky, 0xCCCCCCCCCCCCCCCCull);
      const int64_t u = 4 * (b + 16 * h);
      _mm512_storeu_si512(mask + u, _mm512_maskz_mov_epi8(k, ones));
      // A zeroing multiply: a dropped inf or NaN gives exactly 0, like the scalar path.
      for (int q = 0; q < 4; ++q)
        _mm512_storeu_ps(y + u + 16 * q, _mm512_maskz_mul_ps(__mmask16(k >> (16 * q)),
                                                            _mm512_loadu_ps(x + u + 16 * q),
                                                            vscale));
    }
  }
  return b;
}

// AVX2: one block per 32-bit lane, the four counter words in four registers, 8 blocks = 32 units
// per iteration. The multiply's low word is vpmulld, its high word two vpmuludq (even lanes,
// then odd lanes shifted down) blended. AVX2 has no unsigned compare: both sides are offset by
// 2^31 for the signed one.
CONVNET_TARGET_AVX2 int64_t dropout_fwd_avx2(const float* x, float* y, uint8_t* mask, int64_t lo,
                                             int64_t hi, uint64_t seed, uint32_t stream,
                                             uint32_t step, uint32_t threshold, float scale) {
  const __m256i m0 = _mm256_set1_epi32(int(0xD2511F53u)), m1 = _mm256_set1_epi32(int(0xCD9E8D57u));
  __m256i k0[10], k1[10];
  for (int r = 0; r < 10; ++r) {
    k0[r] = _mm256_set1_epi32(int(uint32_t(seed) + uint32_t(r) * 0x9E3779B9u));
    k1[r] = _mm256_set1_epi32(int(uint32_t(seed >> 32) + uint32_t(r) * 0xBB67AE85u));
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
  const __m256i thr = _mm256_xor_si256(_mm256_set1_epi32(int(threshold)), sign);
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t b = lo;
  for (; b + 8 <= hi; b += 8) {
    __m256i base = _mm256_set1_epi32(int(uint32_t(b)));
    __m256i c0 = _mm256_add_epi32(base, lane);
    // Wrap past 2^32 inside the 8 lanes: c0 < base (unsigned) adds 1 (subtracts -1) to c1.
    __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(base, sign), _mm256_xor_si256(c0, sign));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(int(uint32_t(b >> 32))), wrapped);
    __m256i c2 = _mm256_set1_epi32(int(step)), c3 = _mm256_set1_epi32(int(stream));
    for (int r = 0; r < 10; ++r) {
      __m256i lo0 = _mm256_mullo_epi32(c0, m0), hi0 = mulhi_avx2(c0, m0);
      __m256i lo1 = _mm256_mullo_epi32(c2, m1), hi1 = mulhi_avx2(c2, m1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0[r]);
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1[r]);
      c3 = lo0;
    }
    __m256i w = _mm256_or_si256(
        _mm256_or_si256(kept_avx2(c0, thr, sign, 0), kept_avx2(c1, thr, sign, 8)),
        _mm256_or_si256(kept_avx2(c2, thr, sign, 16), kept_avx2(c3, thr, sign, 24)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(mask + 4 * b), w);
    const float* xb = x + 4 * b;
    float* yb = y + 4 * b;
    __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
    __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
    __m128i wl = _mm256_castsi256_si128(w), wh = _mm256_extracti128_si256(w, 1);
    _mm256_storeu_ps(yb, masked_scale_avx2(x0, wl, vscale));
    _mm256_storeu_ps(yb + 8, masked_scale_avx2(x1, _mm_srli_si128(wl, 8), vscale));
    _mm256_storeu_ps(yb + 16, masked_scale_avx2(x2, wh, vscale));
    _mm256_storeu_ps(yb + 24, masked_scale_avx2(x3, _mm_srli_si128(wh, 8), vscale));
  }
  return b;
}

}  // namespace

void dropout_fwd_cpu(const DropoutParams& p, const float* x, float* y, uint8_t* mask, int64_t n) {
  const uint32_t threshold = keep_threshold(p.keep);
  const float scale = p.inverted ? 1.f / p.keep : 1.f;
  const int64_t full = n / 4;  // whole Philox blocks; the last partial one is done below
  const Isa isa = cpu_isa();
  parallel_range(full, [&](int64_t lo, int64_t hi) {
    if (threshold == 0xFFFFFFFFu) {
      std::memset(mask + 4 * lo, 1, size_t(4 * (hi - lo)));
      apply_mask(x, mask, y, 4 * lo, 4 * hi, scale, false);
      return;
    }
    int64_t done = lo;  // blocks [lo, done) finished by a fused SIMD kernel
    if (isa == Isa::avx512)
      done = dropout_fwd_avx512(x, y, mask, lo, hi, p.seed, p.stream, p.step, threshold, scale);
    else if (isa == Isa::avx2)
      done = dropout_fwd_avx2(x, y, mask, lo, hi, p.seed, p.stream, p.step, threshold, scale);
    draw_mask_blocks(mask, done, hi, p.seed, p.stream, p.step, threshold);
    apply_mask(x, mask, y, 4 * done, 4 * hi, scale, false);
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
