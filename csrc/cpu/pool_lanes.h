// One register of images for the max pooling kernels that keep a per-image state over a whole
// window (pool_kernels.h's winners): GCC vector types as wide as the build's registers (GCC turns
// wider ones into scalar code on narrower ISAs), unaligned in memory, and the widening of winner
// bytes to int32 lanes and back, which GCC 12 leaves scalar in vector-extension code: written
// with each ISA's own instructions here.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "simd_width.h"

namespace convnet {
namespace {

typedef float PoolVec __attribute__((vector_size(kSimdFloats * 4), aligned(4)));
typedef int32_t PoolInts __attribute__((vector_size(kSimdFloats * 4), aligned(4)));

// a > b ? a : b per lane, the plain max forward's select, in one instruction: x86's max returns
// its second operand unless the first is greater (NaNs and signed zeros included).
inline PoolVec select_max(PoolVec a, PoolVec b) {
#if defined(__AVX512F__)
  return (PoolVec)_mm512_max_ps((__m512)a, (__m512)b);
#elif defined(__AVX2__)
  return (PoolVec)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return (PoolVec)_mm_max_ps((__m128)a, (__m128)b);
#endif
}

// more ? k : at per lane, where k exceeds every lane of at: with a signed max (SSE4.1 and up)
// the larger of at and (more & k), two cheap operations against a variable blend; the baseline
// build has no such max and keeps the select.
inline PoolInts select_later(PoolInts more, PoolInts k, PoolInts at) {
#if defined(__SSE4_1__)
  const PoolInts moved = more & k;
  return moved > at ? moved : at;
#else
  return more ? k : at;
#endif
}

// kSimdFloats bytes at p, zero-extended.
inline PoolInts widen_bytes(const uint8_t* p) {
#if defined(__AVX512F__)
  // Zero-masked forms here and below: GCC's plain ones read an undefined register (a false
  // warning).
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return (PoolInts)_mm512_maskz_cvtepu8_epi32(0xffff, bytes);
#elif defined(__AVX2__)
  return (PoolInts)_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#else
  int32_t four;
  std::memcpy(&four, p, 4);
  const __m128i zero = _mm_setzero_si128();
  return (PoolInts)_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(four), zero), zero);
#endif
}

// The low byte of each lane of v (each 0..255) to p, kSimdFloats bytes.
inline void narrow_to_bytes(uint8_t* p, PoolInts v) {
#if defined(__AVX512F__)
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_maskz_cvtepi32_epi8(0xffff, (__m512i)v));
#elif defined(__AVX2__)
  const __m256i words = _mm256_packus_epi32((__m256i)v, (__m256i)v);  // per 128-bit half
  const __m256i bytes = _mm256_packus_epi16(words, words);  // dword 0: lanes 0-3, dword 4: 4-7
  const __m256i pick = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
  const __m256i low = _mm256_permutevar8x32_epi32(bytes, pick);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(low));
#else
  const __m128i words = _mm_packs_epi32((__m128i)v, (__m128i)v);
  const int32_t four = _mm_cvtsi128_si32(_mm_packus_epi16(words, words));
  std::memcpy(p, &four, 4);
#endif
}

// A block's lanes in memory: L > 0 a whole register (one load or store); L == 0 the first n
// (< kSimdFloats) through a zero-padded copy (a partial block, after the whole ones).
template <int L>
PoolVec load_floats(const float* p, size_t n) {
  if constexpr (L > 0) return *reinterpret_cast<const PoolVec*>(p);
  PoolVec v = {};
  std::memcpy(&v, p, n * 4);
  return v;
}
template <int L>
void store_floats(float* p, PoolVec v, size_t n) {
  if constexpr (L > 0)
    *reinterpret_cast<PoolVec*>(p) = v;
  else
    std::memcpy(p, &v, n * 4);
}
template <int L>
PoolInts load_bytes(const uint8_t* p, size_t n) {
  if constexpr (L > 0) return widen_bytes(p);
  uint8_t padded[kSimdFloats] = {};
  std::memcpy(padded, p, n);
  return widen_bytes(padded);
}
template <int L>
void store_bytes(uint8_t* p, PoolInts v, size_t n) {
  if constexpr (L > 0) return narrow_to_bytes(p, v);
  uint8_t padded[kSimdFloats];
  narrow_to_bytes(padded, v);
  std::memcpy(p, padded, n);
}

}  // namespace
}  // namespace convnet
