// SGEMM variant 2: AVX2+FMA micro-kernel, a 6x16 tile of C in 12 ymm accumulators (two 8-float
// B vectors times six broadcast A values per k step: 12 FMAs per 8 loads, FMA-bound with two FMA
// pipes and the 16 ymm registers full). As in the AVX-512 kernels: the C tile, the A stream and
// the image rows of a gathering tile are prefetched, a partial last tile runs a kernel of only its
// rows (m = 32 filters took 36 rows of FMAs with 6-row tiles) and, over at most 8 columns, of only
// its first vector (HALF), and a B panel gathered from image rows is packed by its first tile
// while that tile computes. Full tiles load and store C with plain unaligned moves; only the
// columns of a partial tile go through masked moves (vmaskmovps is many times slower than a plain
// store on AMD cores, and every full tile paid for it).
//
// Blocking comes from the cache sizes of the machine it runs on (cache_info.h), read once:
//   KC: the KC x 16 B micro-panel fills half of L1 (256 steps for 32 KB);
//   MC: the MC x KC A block fills a third of L2, leaving room for the B micro-panels and the C
//       tiles streaming through (168 rows for Zen 3's 512 KB with KC = 256: the old fixed 480
//       rows filled the whole 512 KB by themselves);
//   NC: the KC x NC B block fills a quarter of the L3 share of one core, at most 4096 columns.
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "cache_info.h"
#include "gemm_driver.h"

namespace convnet {
namespace {

struct Kernel6x16 {
  static constexpr int MR = 6, NR = 16;
  // A gathering tile prefetches the image rows this many k steps ahead (about 300 cycles of
  // FMAs), both cache lines a 16-float row may straddle: the rows of one panel jump between taps,
  // which the hardware prefetchers do not follow. With conv2's 512-column blocks (conv.cpp) the
  // rows come from L2 or L3, and the prefetch made its data gradient 1.3x as fast (one thread,
  // Intel Xeon); with the 4096-column blocks of before it made no measurable difference.
  static constexpr int kGatherPrefetch = 48;

  static gemm_detail::Blocking blocking() {
    static const gemm_detail::Blocking b = [] {
      const CacheSizes& cs = cache_sizes();
      int64_t kc = std::clamp<int64_t>(cs.l1d / 2 / (NR * 4), 64, 512) / 8 * 8;
      int64_t mc = std::clamp<int64_t>(cs.l2 / 3 / (kc * 4), MR * 8, MR * 100) / MR * MR;
      int64_t nc = std::clamp<int64_t>(cs.l3_per_core / 4 / (kc * 4), 512, 4096) / NR * NR;
      return gemm_detail::Blocking{mc, kc, nc};
    }();
    return b;
  }

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                  float beta, int rows, int cols) {
    run_rows(kc, a, b, c, ldc, alpha, beta, rows, cols, std::make_integer_sequence<int, MR>());
  }

  static void run_gather(int64_t kc, const float* a, const float* const* rows_b, float* packed_b,
                         float* c, int64_t ldc, float alpha, float beta, int cols) {
    tile<MR, true>(kc, a, nullptr, c, ldc, alpha, beta, cols, rows_b, packed_b);
  }

  // A read in place (GemmOperand::rows_in_place): step k of the panel at a + k * a_step; with
  // a_next, the next tile row's MR rows (step k at a_next + k * a_step) are prefetched into L2,
  // four steps per four steps (gemm_driver.h: the first panel's tile of each tile row; the last
  // kc % 4 steps are left to the L1 prefetch).
  static void run_strided_a(int64_t kc, const float* a, int64_t a_step, const float* a_next,
                            const float* b, float* c, int64_t ldc, float alpha, float beta,
                            int rows, int cols) {
    run_rows<true>(kc, a, b, c, ldc, alpha, beta, rows, cols,
                   std::make_integer_sequence<int, MR>(), a_step, a_next);
  }

  // As run_strided_a, also writing the tile row's A panel (kc steps of MR floats) to packed_a
  // for the tile row's other tiles (gemm_driver.h, tile_packs_a: where the k steps are a
  // multiple of 4 KB apart, under at most 4 B panels; more pack ahead, pack_part_ahead).
  static void run_strided_a_packing(int64_t kc, const float* a, int64_t a_step,
                                    const float* a_next, float* packed_a, const float* b,
                                    float* c, int64_t ldc, float alpha, float beta, int rows,
                                    int cols) {
    run_rows<true, true>(kc, a, b, c, ldc, alpha, beta, rows, cols,
                         std::make_integer_sequence<int, MR>(), a_step, a_next, packed_a);
  }

  template <bool STRIDED_A = false, bool PACK_A = false, int... R>
  static void run_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                       float alpha, float beta, int rows, int cols,
                       std::integer_sequence<int, R...>, int64_t a_step = MR,
                       const float* a_next = nullptr, float* packed_a = nullptr) {
    using Fn = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float, int,
                        const float* const*, float*, int64_t, const float*, float*);
    static constexpr Fn table[] = {&tile<R + 1, false, STRIDED_A, PACK_A>...};
    if (rows == MR && cols <= 8)  // half of a B panel: its first vector only
      return tile<MR, false, STRIDED_A, PACK_A, true>(kc, a, b, c, ldc, alpha, beta, cols, nullptr,
                                                      nullptr, a_step, a_next, packed_a);
    table[rows - 1](kc, a, b, c, ldc, alpha, beta, cols, nullptr, nullptr, a_step, a_next,
                    packed_a);
  }

  // A read in place has one k step per cache line (or two), each prefetched into L1 this many
  // steps ahead.
  static constexpr int kPrefetchStridedA = 4;
  // Every tile reads A in place except where its k steps are a multiple of 4 KB apart (fc6 and
  // fc7's weights), which puts all of a tile's A lines into one L1 set: at 6 cycles of FMAs per
  // k step, fc6's forward ran 0.54x as fast as packed (0.68x without the prefetch), where fc8's
  // (4000 bytes apart) ran 1.11x (AMD Zen 4, AVX2, one thread).
  // On Zen 5 (12-way L1), in place by tile rows with the next row prefetched into L2: fc6 / fc7
  // still 0.74 / 0.75x as fast as packed (one thread, thread CPU time, 9 pairs). So only the
  // first tile of each tile row reads A in place, writing its panel for the row's other tiles
  // (run_strided_a_packing; gemm_driver.h): fc6 / fc7 forward 1.02-1.05x as fast as packed by
  // a separate pass with the next block prefetched (one thread, thread CPU time, 9 pairs,
  // alternating in one process; two threads 1.04-1.06x), the same bits. The prefetch 1 to 3
  // steps ahead instead of 4: the same; 8 or 12: 0.98-1.00x. That first tile took 1.9x a later
  // tile's time (perf, fc6 forward, 128 images, AMD Zen 5, one thread): under more than 4 B
  // panels, A is now packed a block ahead instead, a share per tile (pack_part_ahead): 1.04x as
  // fast on one thread, 1.02-1.05x on two.

  static inline __m256i lane_mask(int n) {  // the first n (clamped to 0..8) lanes
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  // HALF: a tile of at most 8 columns (the last panel of n) computes only the first of the
  // panel's two vectors: an FC pass over 100 images computed 112 columns, now 104 (fc6-fc8
  // forward 1.04x as fast; over 4 images fc8 1.23-1.25x; AMD Zen 5, AVX2, two threads,
  // alternating in one process). Its epilogue is kept apart from the full tile's: sharing the
  // masked epilogue (reordered) ran SGEMM 2048^2, all full tiles, at 0.96-0.97x.
  template <int ROWS, bool GATHER = false, bool STRIDED_A = false, bool PACK_A = false,
            bool HALF = false>
  static void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                   float beta, int cols, const float* const* rows_b = nullptr,
                   float* packed_b = nullptr, int64_t a_step = MR,
                   const float* a_next = nullptr, float* packed_a = nullptr) {
    if (!STRIDED_A) a_step = MR;
    __m256 acc0[ROWS], acc1[ROWS];
#pragma GCC unroll 6
    for (int r = 0; r < ROWS; ++r) {
      acc0[r] = acc1[r] = _mm256_setzero_ps();
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + (HALF ? 7 : 15)), _MM_HINT_T0);
    }
    auto step = [&](int64_t k) __attribute__((always_inline)) {
      __m256 b0, b1;
      if (GATHER) {
        b0 = _mm256_loadu_ps(rows_b[k]), b1 = _mm256_loadu_ps(rows_b[k] + 8);
        _mm256_store_ps(packed_b + k * NR, b0), _mm256_store_ps(packed_b + k * NR + 8, b1);
      } else {
        b0 = _mm256_load_ps(b + k * NR);
        if (!HALF) b1 = _mm256_load_ps(b + k * NR + 8);
      }
      if (PACK_A) {  // exactly ROWS floats: the source may end there
        const float* src = a + k * a_step;
        float* dst = packed_a + k * MR;
        if (ROWS == 6) {
          _mm_storeu_ps(dst, _mm_loadu_ps(src));
          _mm_store_sd(reinterpret_cast<double*>(dst + 4),
                       _mm_load_sd(reinterpret_cast<const double*>(src + 4)));
        } else {
#pragma GCC unroll 6
          for (int r = 0; r < ROWS; ++r) dst[r] = src[r];
        }
      }
#pragma GCC unroll 6
      for (int r = 0; r < ROWS; ++r) {
        __m256 ar = _mm256_broadcast_ss(a + k * a_step + r);
        acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
        if (!HALF) acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
      }
    };
    // Four k steps per iteration (GCC leaves this loop rolled: 12 FMAs beside 13 other
    // instructions per step), and one prefetch of the A stream per 96 bytes of it, 16 steps
    // ahead (a prefetch at every step, as before, issued three per cache line).
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      if (STRIDED_A) {
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) {
          const float* ahead = a + (k + u + kPrefetchStridedA) * a_step;
          _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(ahead + ROWS - 1), _MM_HINT_T0);
        }
        if (a_next) {
#pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) {
            _mm_prefetch(reinterpret_cast<const char*>(a_next), _MM_HINT_T1);
            _mm_prefetch(reinterpret_cast<const char*>(a_next + MR - 1), _MM_HINT_T1);
            a_next += a_step;
          }
        }
      } else {
        _mm_prefetch(reinterpret_cast<const char*>(a + (k + 16) * MR), _MM_HINT_T0);
      }
      if (GATHER) {
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) {
          const float* ahead = rows_b[std::min<int64_t>(k + u + kGatherPrefetch, kc - 1)];
          _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(ahead + NR - 1), _MM_HINT_T0);
        }
      }
      step(k), step(k + 1), step(k + 2), step(k + 3);
    }
    for (; k < kc; ++k) step(k);
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (cols == NR) {
#pragma GCC unroll 6
      for (int r = 0; r < ROWS; ++r) {
        float* cr = c + r * ldc;
        __m256 v0 = _mm256_mul_ps(acc0[r], va), v1 = _mm256_mul_ps(acc1[r], va);
        if (beta != 0.f) {
          v0 = _mm256_fmadd_ps(_mm256_loadu_ps(cr), vb, v0);
          v1 = _mm256_fmadd_ps(_mm256_loadu_ps(cr + 8), vb, v1);
        }
        _mm256_storeu_ps(cr, v0);
        _mm256_storeu_ps(cr + 8, v1);
      }
      return;
    }
    __m256i m0 = lane_mask(cols), m1 = lane_mask(cols - 8);
    if (HALF) {
#pragma GCC unroll 6
      for (int r = 0; r < ROWS; ++r) {
        float* cr = c + r * ldc;
        __m256 v0 = _mm256_mul_ps(acc0[r], va);
        if (beta != 0.f) v0 = _mm256_fmadd_ps(_mm256_maskload_ps(cr, m0), vb, v0);
        _mm256_maskstore_ps(cr, m0, v0);
      }
      return;
    }
#pragma GCC unroll 6
    for (int r = 0; r < ROWS; ++r) {
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
};

}  // namespace

void gemm_avx2(const GemmProblem& p) { gemm_detail::gemm_blocked<Kernel6x16>(p); }

}  // namespace convnet
