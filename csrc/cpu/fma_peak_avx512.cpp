#include <immintrin.h>

#include "fma_peak.h"

namespace convnet {

// 24 independent accumulator chains hide the FMA latency on two 512-bit FMA pipes.
double fma_loop_avx512(int64_t iters) {
  __m512 acc[24];
  for (int r = 0; r < 24; ++r) acc[r] = _mm512_set1_ps(float(r));
  __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 24
    for (int r = 0; r < 24; ++r) acc[r] = _mm512_fmadd_ps(acc[r], x, y);
    __asm__ volatile("" : "+v"(x));  // keep the loop from being folded
  }
  __m512 s = acc[0];
  for (int r = 1; r < 24; ++r) s = _mm512_add_ps(s, acc[r]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * 24 * 16 * 2;
}

}  // namespace convnet
