// SGEMM variant 2: AVX2+FMA micro-kernel, a 6x16 tile of C in 12 ymm accumulators (two 8-float
// B vectors times six broadcast A values per k step). Blocking as in the AVX-512 kernel: the
// KC x 16 B micro-panel in L1, a 480 x 256 A block in L2, the B block in L3.
#include <immintrin.h>

#include "gemm_driver.h"

namespace convnet {
namespace {

struct Kernel6x16 {
  static constexpr int MR = 6, NR = 16, KC = 256, MC = 6 * 80, NC = 3072;

  static inline __m256i lane_mask(int n) {  // the first n (clamped to 0..8) lanes
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                  float beta, int rows, int cols) {
    __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
      __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        __m256 ar = _mm256_broadcast_ss(a + r);
        acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
      }
      a += MR;
      b += NR;
    }
    __m256i m0 = lane_mask(cols), m1 = lane_mask(cols - 8);
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      if (r < rows) {
        float* cr = c + r * ldc;
        __m256 v0 = _mm256_mul_ps(acc0[r], va), v1 = _mm256_mul_ps(acc1[r], va);
        if (beta != 0.f) {
          v0 = _mm256_fmadd_ps(_mm256_maskload_ps(cr, m0), vb, v0);
          v1 = _mm256_fmadd_ps(_mm256_maskload_ps(cr + 8, m1), vb, v1);
        }
        _mm256_maskstore_ps(cr, m0, v0);
        _mm256_maskstore_ps(cr + 8, m1, v1);
      }
    }
  }
};

}  // namespace

void gemm_avx2(const GemmProblem& p) { gemm_detail::gemm_blocked<Kernel6x16>(p); }

}  // namespace convnet
