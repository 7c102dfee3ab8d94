// assemble_batch variants 4 and 5 (see csrc/cpu/augment.cpp): 16 images per block, one 4-byte
// gather per pixel column from each, three 64-byte stores (R, G, B planes), cached or streaming.
#include <immintrin.h>

#include <cstdint>

#include "augment_rows.h"

namespace convnet {

template <bool kShift, bool kStream>
static void block16(const AssembleJob& b, int64_t row, int64_t j) {
  const int64_t crop = b.p.crop, n = b.p.n, plane = crop * crop * n;
  alignas(64) int64_t addr[16], step[16];
  alignas(64) float sh[3][16];
  for (int i = 0; i < 16; ++i) {
    addr[i] = reinterpret_cast<int64_t>(assemble_row_start(b, row, j + i));
    step[i] = b.flips[j + i] ? -3 : 3;
    for (int ch = 0; ch < 3; ++ch) sh[ch][i] = kShift ? b.shift[(j + i) * 3 + ch] : 0.f;
  }
  __m512i a0 = _mm512_load_si512(addr), a1 = _mm512_load_si512(addr + 8);
  const __m512i s0 = _mm512_load_si512(step), s1 = _mm512_load_si512(step + 8);
  const __m512 sh0 = _mm512_load_ps(sh[0]), sh1 = _mm512_load_ps(sh[1]), sh2 = _mm512_load_ps(sh[2]);
  const __m512i byte = _mm512_set1_epi32(0xff);
  const float* mean = b.mean + row * crop;
  float* o = b.out + row * crop * n + j;
  for (int64_t c = 0; c < crop; ++c, o += n) {
    // Absolute addresses as 64-bit indices from a null base: the images are separate buffers.
    const __m256i lo = _mm512_i64gather_epi32(a0, nullptr, 1);
    const __m256i hi = _mm512_i64gather_epi32(a1, nullptr, 1);
    a0 = _mm512_add_epi64(a0, s0);
    a1 = _mm512_add_epi64(a1, s1);
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    __m512 r = _mm512_cvtepi32_ps(_mm512_and_si512(v, byte));
    __m512 g = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 8), byte));
    __m512 bl = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 16), byte));
    r = _mm512_sub_ps(r, _mm512_set1_ps(mean[c]));
    g = _mm512_sub_ps(g, _mm512_set1_ps(mean[crop * crop + c]));
    bl = _mm512_sub_ps(bl, _mm512_set1_ps(mean[2 * crop * crop + c]));
    if (kShift) {
      r = _mm512_add_ps(r, sh0);
      g = _mm512_add_ps(g, sh1);
      bl = _mm512_add_ps(bl, sh2);
    }
    if (kStream) {
      _mm512_stream_ps(o, r);
      _mm512_stream_ps(o + plane, g);
      _mm512_stream_ps(o + 2 * plane, bl);
    } else {
      _mm512_storeu_ps(o, r);
      _mm512_storeu_ps(o + plane, g);
      _mm512_storeu_ps(o + 2 * plane, bl);
    }
  }
}

void assemble_row_avx512(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1, bool stream) {
  assemble_row_blocked(b, row, j0, j1, stream, [&](int64_t j, bool stream_block) {
    if (stream_block)
      b.shift ? block16<true, true>(b, row, j) : block16<false, true>(b, row, j);
    else
      b.shift ? block16<true, false>(b, row, j) : block16<false, false>(b, row, j);
  });
}

}  // namespace convnet
