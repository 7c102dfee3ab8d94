// The blocked SGEMM driver (BLIS loop order), shared by every micro-kernel: each ISA file
// (gemm_avx512.cpp, gemm_avx2.cpp, gemm_portable.cpp) includes it with its own Kernel, so the
// driver is compiled with that file's ISA flags.
//
//   C (m, n) = alpha * A (m, k) * B (k, n) + beta * C,  C row-major with row stride ldc
//
// Loops (outer to inner): n in NC blocks -> k in KC blocks (pack B: KC x NC, lives in L2/L3)
// -> m in MC blocks (pack A: MC x KC, lives in L2) -> NR columns (one B micro-panel, KC x NR,
// stays in L1 while...) -> MR rows: the micro-kernel, an MR x NR tile of C in registers.
//
// Threads: each thread takes a contiguous share of one dimension and runs the serial loops on it
// with its own packing buffers. n is split when m <= n (A, the smaller side, is packed by every
// thread), m otherwise; k is split when it dwarfs m and n (convolution weight gradients: the
// reduction runs over every image and position), each thread summing into its own buffer.
//
// Kernel provides MR, NR, MC, KC, NC and
//   run(kc, a_panel, b_panel, c, ldc, alpha, beta, rows, cols): C[rows x cols] tile of
//   alpha * a_panel * b_panel (+ beta * C; beta == 0 never reads C);
//   kDirectB: whether it also has run_direct(kc, a_panel, b_rows, c, ldc, alpha, beta, rows),
//   the same for a full-width tile whose B panel is read in place through kc row pointers
//   (GemmOperand::row_pointers: implicit-GEMM convolutions read the images directly).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gemm_cpu.h"
#include "gemm_pack.h"

namespace convnet {
namespace gemm_detail {

template <class K>
void gemm_serial(const GemmProblem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                 int64_t k0, int64_t k1, float* c, int64_t ldc, float beta) {
  constexpr int64_t kPanels = (K::NC + K::NR - 1) / K::NR;
  thread_local AlignedScratch abuf, bbuf;
  thread_local std::vector<const float*> bptrs;  // per panel: KC row pointers, if direct
  thread_local std::vector<char> direct;
  float* pa = abuf.get(size_t(K::MC) * K::KC);
  float* pb = bbuf.get(size_t(kPanels) * K::NR * K::KC);
  if (K::kDirectB) bptrs.resize(size_t(kPanels) * K::KC), direct.resize(kPanels);
  for (int64_t jc = n0; jc < n1; jc += K::NC) {
    int64_t nc = std::min<int64_t>(K::NC, n1 - jc);
    for (int64_t pc = k0; pc < k1; pc += K::KC) {
      int64_t kc = std::min<int64_t>(K::KC, k1 - pc);
      float beta_k = pc == k0 ? beta : 1.f;
      // B: each full panel read in place when the operand allows it, packed otherwise.
      for (int64_t jr = 0; jr < nc; jr += K::NR) {
        int64_t q = jr / K::NR, cols = std::min<int64_t>(K::NR, nc - jr);
        bool d = K::kDirectB && cols == K::NR &&
                 p.b->row_pointers(jc + jr, pc, kc, K::NR, bptrs.data() + q * K::KC);
        if (K::kDirectB) direct[q] = d;
        if (!d) p.b->pack(jc + jr, cols, pc, kc, K::NR, pb + q * kc * K::NR);
      }
      for (int64_t ic = m0; ic < m1; ic += K::MC) {
        int64_t mc = std::min<int64_t>(K::MC, m1 - ic);
        p.a->pack(ic, mc, pc, kc, K::MR, pa);
        for (int64_t jr = 0; jr < nc; jr += K::NR) {
          int64_t q = jr / K::NR;
          int cols = int(std::min<int64_t>(K::NR, nc - jr));
          const float* bp = pb + q * kc * K::NR;
          bool d = K::kDirectB && direct[q];
          for (int64_t ir = 0; ir < mc; ir += K::MR) {
            int rows = int(std::min<int64_t>(K::MR, mc - ir));
            const float* ap = pa + (ir / K::MR) * kc * K::MR;
            float* ct = c + (ic + ir) * ldc + (jc + jr);
            if constexpr (K::kDirectB) {
              if (d) {
                K::run_direct(kc, ap, bptrs.data() + q * K::KC, ct, ldc, p.alpha, beta_k, rows);
                continue;
              }
            }
            K::run(kc, ap, bp, ct, ldc, p.alpha, beta_k, rows, cols);
          }
        }
      }
    }
  }
}

// C = beta * C for k == 0 (alpha * A * B is empty).
inline void scale_c(const GemmProblem& p) {
  for (int64_t i = 0; i < p.m; ++i) {
    float* r = p.c + i * p.ldc;
    for (int64_t j = 0; j < p.n; ++j) r[j] = p.beta == 0.f ? 0.f : p.beta * r[j];
  }
}

template <class K>
void gemm_blocked(const GemmProblem& p) {
  if (p.m <= 0 || p.n <= 0) return;
  if (p.k <= 0) return scale_c(p);
  int threads = omp_get_max_threads();
  double flops = 2.0 * double(p.m) * double(p.n) * double(p.k);
  if (flops < 4e6) threads = 1;  // waking a second core costs more than it saves
  if (threads == 1) return gemm_serial<K>(p, 0, p.m, 0, p.n, 0, p.k, p.c, p.ldc, p.beta);

  bool split_k = p.k >= 8 * std::max(p.m, p.n) && p.k >= int64_t(threads) * K::KC;
  if (split_k) {
    // Threads 1.. reduce into private (m, n) buffers, added to C once all are done.
    static std::vector<float> partial;  // grow-only; GEMMs are issued from one host thread
    size_t mn = size_t(p.m) * size_t(p.n);
    if (partial.size() < mn * (threads - 1)) partial.resize(mn * (threads - 1));
    int64_t kchunk = (p.k + threads - 1) / threads;
#pragma omp parallel num_threads(threads)
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t kb = std::min(p.k, t * kchunk), ke = std::min(p.k, kb + kchunk);
      if (t == 0)
        gemm_serial<K>(p, 0, p.m, 0, p.n, kb, ke, p.c, p.ldc, p.beta);
      else if (kb < ke)
        gemm_serial<K>(p, 0, p.m, 0, p.n, kb, ke, partial.data() + mn * (t - 1), p.n, 0.f);
      else
        std::fill_n(partial.data() + mn * (t - 1), mn, 0.f);
#pragma omp barrier
#pragma omp for schedule(static)
      for (int64_t i = 0; i < p.m; ++i) {
        float* cr = p.c + i * p.ldc;
        for (int u = 0; u < nt - 1; ++u) {
          const float* src = partial.data() + mn * u + i * p.n;
          for (int64_t j = 0; j < p.n; ++j) cr[j] += src[j];
        }
      }
    }
    return;
  }

  bool split_n = p.n >= p.m;
  int64_t extent = split_n ? p.n : p.m, unit = split_n ? K::NR : K::MR;
  int64_t units = (extent + unit - 1) / unit;
  if (units < threads) threads = int(units);
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t per = (units + nt - 1) / nt;
    int64_t b = std::min(extent, t * per * unit), e = std::min(extent, (t + 1) * per * unit);
    if (b < e) {
      if (split_n)
        gemm_serial<K>(p, 0, p.m, b, e, 0, p.k, p.c, p.ldc, p.beta);
      else
        gemm_serial<K>(p, b, e, 0, p.n, 0, p.k, p.c, p.ldc, p.beta);
    }
  }
}

}  // namespace gemm_detail
}  // namespace convnet
