#include <immintrin.h>

#include "fma_peak.h"

namespace convnet {

// 12 independent accumulator chains (16 ymm registers) on two 256-bit FMA pipes.
double fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  for (int r = 0; r < 12; ++r) acc[r] = _mm256_set1_ps(float(r));
  __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int r = 0; r < 12; ++r) acc[r] = _mm256_fmadd_ps(acc[r], x, y);
    __asm__ volatile("" : "+x"(x));
  }
  __m256 s = acc[0];
  for (int r = 1; r < 12; ++r) s = _mm256_add_ps(s, acc[r]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return double(iters) * 12 * 8 * 2;
}

}  // namespace convnet
