// assemble_batch variants 2 and 3 (see csrc/cpu/augment.cpp): 16 images per block as two halves
// of 8, one 4-byte gather per pixel column from each image, per channel two 32-byte stores that
// fill one cache line, cached or streaming. (Blocks of 8 would stream half lines, which measured
// 6x slower than cached stores.)
#include <immintrin.h>

#include <cstdint>

#include "augment_rows.h"

namespace convnet {

template <bool kStream>
static inline void store8(float* o, __m256 v) {
  if (kStream)
    _mm256_stream_ps(o, v);
  else
    _mm256_storeu_ps(o, v);
}

template <bool kShift, bool kStream>
static void block16(const AssembleJob& b, int64_t row, int64_t j) {
  const int64_t crop = b.p.crop, n = b.p.n, plane = crop * crop * n;
  alignas(32) long long addr[16], step[16];
  alignas(32) float sh[3][16];
  for (int i = 0; i < 16; ++i) {
    addr[i] = reinterpret_cast<long long>(assemble_row_start(b, row, j + i));
    step[i] = b.flips[j + i] ? -3 : 3;
    for (int ch = 0; ch < 3; ++ch) sh[ch][i] = kShift ? b.shift[(j + i) * 3 + ch] : 0.f;
  }
  __m256i a[4], s[4];
  for (int q = 0; q < 4; ++q) {
    a[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(addr + 4 * q));
    s[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(step + 4 * q));
  }
  const __m256i byte = _mm256_set1_epi32(0xff);
  const float* mean = b.mean + row * crop;
  float* o = b.out + row * crop * n + j;
  for (int64_t c = 0; c < crop; ++c, o += n) {
    const __m256 m0 = _mm256_set1_ps(mean[c]);
    const __m256 m1 = _mm256_set1_ps(mean[crop * crop + c]);
    const __m256 m2 = _mm256_set1_ps(mean[2 * crop * crop + c]);
    for (int h = 0; h < 2; ++h) {
      // Absolute addresses as 64-bit indices from a null base: the images are separate buffers.
      const __m128i lo = _mm256_i64gather_epi32(static_cast<const int*>(nullptr), a[2 * h], 1);
      const __m128i hi = _mm256_i64gather_epi32(static_cast<const int*>(nullptr), a[2 * h + 1], 1);
      a[2 * h] = _mm256_add_epi64(a[2 * h], s[2 * h]);
      a[2 * h + 1] = _mm256_add_epi64(a[2 * h + 1], s[2 * h + 1]);
      const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
      __m256 r = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, byte)), m0);
      __m256 g = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 8), byte)), m1);
      __m256 bl = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 16), byte)), m2);
      if (kShift) {
        r = _mm256_add_ps(r, _mm256_load_ps(sh[0] + 8 * h));
        g = _mm256_add_ps(g, _mm256_load_ps(sh[1] + 8 * h));
        bl = _mm256_add_ps(bl, _mm256_load_ps(sh[2] + 8 * h));
      }
      store8<kStream>(o + 8 * h, r);
      store8<kStream>(o + plane + 8 * h, g);
      store8<kStream>(o + 2 * plane + 8 * h, bl);
    }
  }
}

void assemble_row_avx2(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1, bool stream) {
  assemble_row_blocked(b, row, j0, j1, stream, [&](int64_t j, bool stream_block) {
    if (stream_block)
      b.shift ? block16<true, true>(b, row, j) : block16<false, true>(b, row, j);
    else
      b.shift ? block16<true, false>(b, row, j) : block16<false, false>(b, row, j);
  });
}

}  // namespace convnet
