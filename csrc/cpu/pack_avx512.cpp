// The packs of the GEMM operands on AVX-512.
// Transposing: 16 rows x 16 k steps per block, loaded as 16 vectors, transposed in registers
// (unpack -> shuffle -> 128-bit lane shuffles), stored as 16 k steps of the panel. Several times
// faster than element-wise copies. Panels of fewer than 16 rows (the 14- and 6-row A panels)
// store whole vectors too: the lanes past the panel's rows land in slots of later k steps, written
// after them; only a store that would leave the panel is masked (masked stores are slow on AMD).
// Copying (rows contiguous in the source, k steps k_stride apart): see pack_rows_avx512.
#include <immintrin.h>

#include <algorithm>

#include "gemm_pack.h"

namespace convnet {

static inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: t[2i] = a0 b0 a1 b1, t[2i+1] = a2 b2 a3 b3
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // lane L of r[4i+j]: rows 4i..4i+3 at column 4L+j
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {  // 4x4 transpose of 128-bit lanes among r[j], r[4+j], ...
    __m512 ab_lo = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44);
    __m512 ab_hi = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);
    __m512 cd_lo = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
    __m512 cd_hi = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
    t[j] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0xDD);
    t[8 + j] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

void pack_transpose_avx512(const float* const* rows, int width, int64_t len, float* dst) {
  const int64_t end = len * width;
  const bool spill = width <= 16;  // one group: a store may run into later k steps' slots only
  for (int g = 0; g < width; g += 16) {
    int gw = std::min(16, width - g);
    __mmask16 store = gw == 16 ? __mmask16(0xFFFF) : __mmask16((1u << gw) - 1);
    for (int64_t t0 = 0; t0 < len; t0 += 16) {
      int tn = int(std::min<int64_t>(16, len - t0));
      __mmask16 load = tn == 16 ? __mmask16(0xFFFF) : __mmask16((1u << tn) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < gw && rows[g + i] ? _mm512_maskz_loadu_ps(load, rows[g + i] + t0)
                                     : _mm512_setzero_ps();
      transpose16x16(r);
      for (int t = 0; t < tn; ++t) {
        const int64_t at = (t0 + t) * width + g;
        if (gw == 16 || (spill && at + 16 <= end))
          _mm512_storeu_ps(dst + at, r[t]);
        else
          _mm512_mask_storeu_ps(dst + at, store, r[t]);
      }
    }
  }
}

// One k step at a time across all panels, so each source row segment (the k step's `rows`
// floats) is read whole, in order. A panel step of `width` floats is copied as whole vectors (the
// 14-float steps of the 14x32 tile: one masked load, one plain store; the element loop this
// replaces spent a fifth of the FC forward's time here, one thread, Zen 4); a store running past
// the step lands in later steps of the same panel, which are written after it, so only a store
// that would leave the panel is masked (masked stores are slow on AMD cores). The rows lie
// k_stride apart (16 KB for the FC layers' weights: a new page each), and each short segment
// ends before the hardware prefetchers get going: the segments pack_rows_prefetch_steps() ahead
// are prefetched into L2 (FC forward 1.04-1.13x, alternating runs, one thread, Zen 4).
void pack_rows_avx512(const float* src, int64_t k_stride, int64_t rows, int64_t kc, int width,
                      float* dst) {
  const int64_t panels = (rows + width - 1) / width, panel_size = kc * width;
  const int vecs = (width + 15) / 16;
  const int64_t segment_bytes = rows * int64_t(sizeof(float));
  const int64_t ahead_steps = pack_rows_prefetch_steps(segment_bytes);
  for (int64_t t = 0; t < kc; ++t, src += k_stride) {
    if (t + ahead_steps < kc) {
      const char* ahead = reinterpret_cast<const char*>(src + ahead_steps * k_stride);
      for (int64_t b = 0; b < segment_bytes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T1);
      _mm_prefetch(ahead + segment_bytes - 1, _MM_HINT_T1);
    }
    const int64_t step = t * width;
    for (int64_t q = 0; q < panels; ++q) {
      const float* s = src + q * width;
      float* d = dst + q * panel_size + step;
      const int64_t valid = std::min<int64_t>(width, rows - q * width);
      for (int v = 0; v < vecs; ++v) {
        const int64_t lo = 16 * v;
        const int64_t in_rows = std::max<int64_t>(valid - lo, 0);
        const __mmask16 load = in_rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << in_rows) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(load, s + lo);
        if (step + lo + 16 <= panel_size)
          _mm512_storeu_ps(d + lo, x);
        else
          _mm512_mask_storeu_ps(d + lo, __mmask16((1u << (width - lo)) - 1), x);
      }
    }
  }
}

}  // namespace convnet
