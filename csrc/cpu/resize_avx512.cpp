// resize_bilinear_cpu's horizontal pass, variant 2: 16 interleaved output channels per zmm, each
// tap one FMA on a vector of row values picked by permutes from two or three registers (the 16
// outputs read fewer than 48 consecutive floats when the reduction is under 2), or by a gather
// otherwise. The SSE pass (variant 1) costs ~30 instructions per pixel; this one ~3 per tap per
// 16 floats, and gathers are slow on 3-channel rows.
#include <immintrin.h>

#include "resize_kernels.h"

namespace convnet {

void resize_horizontal_avx512(const float* row, const GatherTable& t, uint8_t* out) {
  const int64_t T = t.max_taps;
  for (int64_t q = 0; q * 16 < t.outputs; ++q) {
    const int32_t* idx = t.idx.data() + q * T * 16;
    const float* w = t.w.data() + q * T * 16;
    const float* r = row + t.base[size_t(q)];
    const int32_t taps = t.taps[size_t(q)], span = t.span[size_t(q)];
    __m512 acc = _mm512_setzero_ps();
    if (span <= 48) {
      const __m512 r0 = _mm512_loadu_ps(r), r1 = _mm512_loadu_ps(r + 16);
      const __m512 r2 = _mm512_loadu_ps(r + 32);
      for (int32_t k = 0; k < taps; ++k) {
        const __m512i i = _mm512_loadu_si512(idx + k * 16);
        __m512 v = _mm512_permutex2var_ps(r0, i, r1);  // idx bits 0-4: r0, r1
        // Lanes reading 32..47 take r2[idx - 32] (permutexvar reads idx bits 0-3).
        if (span > 32) {
          const __mmask16 far = _mm512_cmpge_epi32_mask(i, _mm512_set1_epi32(32));
          v = _mm512_mask_permutexvar_ps(v, far, i, r2);
        }
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k * 16), v, acc);
      }
    } else {
      for (int32_t k = 0; k < taps; ++k) {
        const __m512 v = _mm512_i32gather_ps(_mm512_loadu_si512(idx + k * 16), r, 4);
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k * 16), v, acc);
      }
    }
    // Round to nearest even, clamp below at 0; the unsigned narrowing saturates at 255.
    const __m512i v = _mm512_max_epi32(_mm512_cvtps_epi32(acc), _mm512_setzero_si512());
    const int64_t left = t.outputs - q * 16;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    _mm512_mask_cvtusepi32_storeu_epi8(out + q * 16, m, v);
  }
}

}  // namespace convnet
