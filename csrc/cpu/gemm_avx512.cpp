// SGEMM variant 3: AVX-512 micro-kernel, a 14x32 tile of C in 28 zmm accumulators. Each k step
// loads two 16-float vectors of the B panel and broadcasts 14 A values (folded into the FMAs as
// {1to16} memory operands), i.e. 28 FMAs per 16 loads: FMA-bound with two 512-bit FMA pipes.
// The B panel can also be read in place through per-k row pointers (implicit-GEMM convolution:
// 32 images of one pixel are contiguous), which saves the copy that is its im2col.
// Blocking: the KC x 32 B micro-panel (32 KB) stays in L1, the MC x KC A block (504 x 256,
// 516 KB) in L2, the KC x NC B block (3 MB) in L3.
#include <immintrin.h>

#include "gemm_driver.h"

namespace convnet {
namespace {

struct Kernel14x32 {
  static constexpr int MR = 14, NR = 32, KC = 256, MC = 14 * 36, NC = 3072;
  static constexpr bool kDirectB = true;

  // B is either a packed panel (k step t at b + t*NR) or, Direct, kc row pointers (b_rows[t]).
  template <bool Two, bool Direct>
  static inline void tile(int64_t kc, const float* a, const float* b,
                          const float* const* b_rows, float* c, int64_t ldc, float alpha,
                          float beta, int rows, int cols) {
    __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
      const float* bk = Direct ? b_rows[k] : b;
      __m512 b0 = Direct ? _mm512_loadu_ps(bk) : _mm512_load_ps(bk);
      __m512 b1 = !Two ? b0 : Direct ? _mm512_loadu_ps(bk + 16) : _mm512_load_ps(bk + 16);
#pragma GCC unroll 14
      for (int r = 0; r < MR; ++r) {
        __m512 ar = _mm512_set1_ps(a[r]);
        acc0[r] = _mm512_fmadd_ps(ar, b0, acc0[r]);
        if (Two) acc1[r] = _mm512_fmadd_ps(ar, b1, acc1[r]);
      }
      a += MR;
      b += NR;
    }
    __mmask16 m0 = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
    __mmask16 m1 = cols >= 32 ? __mmask16(0xFFFF)
                              : cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : __mmask16(0);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) {
      if (r < rows) {
        float* cr = c + r * ldc;
        __m512 v0 = _mm512_mul_ps(acc0[r], va);
        if (beta != 0.f) v0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, cr), vb, v0);
        _mm512_mask_storeu_ps(cr, m0, v0);
        if (Two) {
          __m512 v1 = _mm512_mul_ps(acc1[r], va);
          if (beta != 0.f) v1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, cr + 16), vb, v1);
          _mm512_mask_storeu_ps(cr + 16, m1, v1);
        }
      }
    }
  }

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                  float beta, int rows, int cols) {
    if (cols > 16)
      tile<true, false>(kc, a, b, nullptr, c, ldc, alpha, beta, rows, cols);
    else
      tile<false, false>(kc, a, b, nullptr, c, ldc, alpha, beta, rows, cols);
  }

  static void run_direct(int64_t kc, const float* a, const float* const* b_rows, float* c,
                         int64_t ldc, float alpha, float beta, int rows) {
    tile<true, true>(kc, a, nullptr, b_rows, c, ldc, alpha, beta, rows, NR);
  }
};

}  // namespace

void gemm_avx512(const GemmProblem& p) { gemm_detail::gemm_blocked<Kernel14x32>(p); }

}  // namespace convnet
