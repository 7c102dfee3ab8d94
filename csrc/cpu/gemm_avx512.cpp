// The AVX-512 SGEMM micro-kernels: an MR x (16*NV) tile of C in MR*NV zmm accumulators. Each k
// step loads NV 16-float vectors of the packed B panel and broadcasts MR values of the packed A
// panel from memory: MR*NV FMAs per NV + MR loads, FMA-bound with two 512-bit FMA pipes. The A
// stream and the C tile (every cache line of it: the epilogue reads C from L2 otherwise) are
// prefetched. STREAM_B kernels, whose KC x NR B panel may outgrow L1, also prefetch the packed B
// panel into L1 (kPrefetchB steps ahead) and take C into L2 when the tile starts and into L1
// kPrefetchC steps before its end: into L1 at the start, C's lines (rows ldc floats apart, in
// one L1 set when ldc is a multiple of 1024) were evicted again by the streams before the tile
// stored them. 128 steps before the end (about 1800 cycles of FMAs at 14x32) rather than 24: on
// Zen 5, once C's rows started on cache lines (below), 2048^2-4096^2 ran 1.02-1.03x as fast (64
// and 96 steps 1.01-1.02x; 9 pairs), 512^2 / 1024^2 and the FC forward's shapes 1.00-1.01x, 3000^2
// (rows off their lines) 0.99x (11 pairs; one thread, thread CPU time, old and new alternated in
// one program); not measured elsewhere. A partial tile (the last rows of m) runs a kernel of
// just those rows rather than MR rows of padding: m = 128 filters per group took 132 rows of FMAs
// with 6-row tiles; a tile of full rows over a partial last panel, just the vectors that hold its
// columns (run_narrow).
// One template, two shapes (numbered variants):
//
// SGEMM variant 3: 14x32 (28 accumulators; 16 loads per 28 FMAs). Blocking from the cache sizes
// read at run time (cache_info.h), for the long-m, long-k GEMMs it runs: KC grows with L2 (L2 / 2
// KB, 256 to 512 steps): C is read and written once per k block, and the deeper block halves that
// traffic. On a 2 MB L2 (Intel Xeon) KC = 512 ran large SGEMMs about 1.07x and the convolutions'
// weight gradients 1.01-1.07x as fast as 256 (FC forward, k = 9216 over n = 128 images, 0.89-0.98x,
// still 1.2x numpy); on Zen 4's 1 MB L2 (one thread, thread CPU time, alternating in one process)
// SGEMM 1024^2-4096^2 1.07-1.14x, the FC forward and data gradient 1.08-1.12x, weight-gradient
// shapes 1.08-1.12x (1024 steps: no faster than 512). On Zen 5's 1 MB L2 with full-width FMAs (two
// threads, bench_gemm.py, builds alternated) KC = 256 ran 3072^2 and 4096^2 at 0.80-0.85x of KC =
// 512's speed, KC = 768 level with it. The KC x 32 B micro-panel (64 KB) then streams from L2
// rather than staying in L1 (L2 feeds 128 bytes per 14 cycles easily, when prefetched: on the Intel
// Xeon, one thread, thread CPU time, alternating in one process, the B and late-C prefetches ran
// 2048^2 and 4096^2 1.09-1.13x as fast as without, either alone 1.03-1.08x). The MC x KC A block
// stays at about 516 KB (252 x 512; 504 x 256 on an L2 under 1 MB, the constants tuned on Zen 5 at
// KC 256), NC = 4 KC.
// Where the time goes on Zen 5 (full-width FMAs; one thread, thread CPU time against the FMA loop,
// benchmarks/gemm_tile_probe --avx512 at KC 512): the loop 97-98% fed from L1, 97-99% with the A
// block from L2, 93-96% streaming the block's B panels, 87-92% with a new C tile per call, 85-92%
// with C from memory; the whole SGEMM on numpy's arrays 76-80%. The gap was C's rows starting 16
// bytes into a cache line (numpy's arrays do): each 32-float row of a tile then spans three lines,
// and the epilogue took 11% of the tile's time against 3% on aligned rows, where the same GEMM ran
// at 84-90%. So the driver lays this kernel's panels from C's lines (kAlignCPanels; gemm_driver.h,
// c_panel_skew). Not kept (the whole GEMM, old and new alternated in one process, 9 pairs):
// kPrefetchB / kPrefetchC of 16-32 / 64-128 against 8 / 24 on C's rows off their lines
// (0.98-1.03x; kPrefetchB 24 on aligned rows no better than 8), plain loads and stores
// for full tiles instead of masked ones (1.00-1.01x), the k loop split in two around the late C
// prefetch instead of testing for it each step (0.98-1.00x), prefetching each row's third line
// (0.97-1.00x on numpy's offset, 0.89-0.90x on aligned rows).
//
// SGEMM variant 4: 6x64 (24 accumulators; 10 loads per 24 FMAs, the fewest loads per FMA that
// fit the 32 registers). Measured faster than 14x32 in cache, and its shape fits the
// convolutions: M = filters or channels per group (48, 96, 128, 192, 256, 384) are multiples of
// 6 (or nearly: 14 rows waste 9% at 128 and 14% at 48), and 64 divides a training batch, so a
// panel is the images of one output position. KC = 128 keeps the KC x 64 micro-panel at 32 KB;
// NC = 512 keeps the C block a thread revisits at every k block (384 x 512, 768 KB) in L2 with
// the 256 KB B block (C is updated K/128 times: 18 for 3x3 convolutions of 256 channels). Not
// STREAM_B: its B panel stays in L1, and with the 14x32 prefetches its GEMMs of Winograd conv3's
// shapes (m = 256 or 384, n = 6272, k = 384 or 256) fell from 0.96-1.06x numpy to 0.84-0.93x.
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "cache_info.h"
#include "gemm_driver.h"

namespace convnet {
namespace {

template <int MR_, int NV, int KC_, int MC_, int NC_, bool STREAM_B>
struct KernelAvx512 {
  static constexpr int MR = MR_, NR = 16 * NV, KC = KC_, MC = MC_, NC = NC_;

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                  float beta, int rows, int cols) {
    run_rows(kc, a, b, c, ldc, alpha, beta, rows, cols, std::make_integer_sequence<int, MR>());
  }

  // The first tile of a B panel whose k steps are image rows (GemmOperand::row_pointers) reads
  // them in place and writes the packed panel for the other tiles as it goes: the loads of the
  // rows, which come from L3 or memory, overlap the FMAs instead of a separate copy pass. The
  // rows are prefetched kGatherPrefetch steps ahead (about 500 cycles of FMAs, the order of a
  // memory access): the rows of one panel jump between taps, which the hardware prefetchers do
  // not follow. On the Intel Xeon, conv3's data gradient ran 1.02-1.10x faster with it, the other
  // gathering passes of conv2-conv5 0.97-1.05x (one thread, thread CPU time, alternating builds).
  static constexpr int kGatherPrefetch = 40;
  static void run_gather(int64_t kc, const float* a, const float* const* rows_b, float* packed_b,
                         float* c, int64_t ldc, float alpha, float beta, int cols) {
    tile<MR, NV, true>(kc, a, nullptr, c, ldc, alpha, beta, cols, rows_b, packed_b);
  }

  // A read in place (GemmOperand::rows_in_place): step k of the panel at a + k * a_step; with
  // a_next, step k of the next tile row's MR rows (at a_next + k * a_step) is prefetched into L2
  // at step k (gemm_driver.h: the first panel's tile of each tile row).
  static void run_strided_a(int64_t kc, const float* a, int64_t a_step, const float* a_next,
                            const float* b, float* c, int64_t ldc, float alpha, float beta,
                            int rows, int cols) {
    run_rows<true>(kc, a, b, c, ldc, alpha, beta, rows, cols,
                   std::make_integer_sequence<int, MR>(), a_step, a_next);
  }

  // A read in place with k contiguous (GemmOperand::rows_k_contiguous): row r of the panel at
  // a + r * a_row; with a_next, the next tile row's lines (same rows, a_row apart) are prefetched
  // into L2, one line per k step (gemm_driver.h).
  static void run_rows_a(int64_t kc, const float* a, int64_t a_row, const float* a_next,
                         const float* b, float* c, int64_t ldc, float alpha, float beta,
                         int rows, int cols) {
    run_rows<false, true>(kc, a, b, c, ldc, alpha, beta, rows, cols,
                          std::make_integer_sequence<int, MR>(), 1, a_next, a_row);
  }

  using TileFn = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float, int,
                          const float* const*, float*, int64_t, const float*, int64_t);

  template <bool STRIDED_A = false, bool ROWS_A = false, int... R>
  static void run_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                       float alpha, float beta, int rows, int cols,
                       std::integer_sequence<int, R...>, int64_t a_step = MR,
                       const float* a_next = nullptr, int64_t a_row = 0) {
    static constexpr TileFn table[] = {&tile<R + 1, NV, false, STRIDED_A, ROWS_A>...};
    if (__builtin_expect(rows == MR && cols <= NR - 16, 0))
      return run_narrow<STRIDED_A, ROWS_A>(kc, a, b, c, ldc, alpha, beta, cols, a_step, a_next,
                                           a_row, std::make_integer_sequence<int, NV - 1>());
    table[rows - 1](kc, a, b, c, ldc, alpha, beta, cols, nullptr, nullptr, a_step, a_next, a_row);
  }

  // The tile of MR rows for a panel of at most NR - 16 columns (the last panel of n): only the
  // vectors that hold them, where an FC pass over 100 images computed 128 columns and fc8's
  // forward over 10 images 64. AMD Zen 5, AVX-512, two threads, alternating in one process: at
  // 100 images fc6 / fc7 / fc8 forward 1.02 / 1.03 / 1.10x as fast, data gradients 1.12-1.14x;
  // fc8 forward at 10 images 1.54x. Out of line and unlikely: with whole panels the FC weight
  // gradient's driver loop still took 2.1 -> 2.9% of its samples (0.99x at 1024 outputs, one
  // thread), the tile's code unchanged.
  template <bool STRIDED_A, bool ROWS_A, int... V>
  __attribute__((noinline)) static void run_narrow(int64_t kc, const float* a, const float* b,
                                                   float* c, int64_t ldc, float alpha,
                                                   float beta, int cols, int64_t a_step,
                                                   const float* a_next, int64_t a_row,
                                                   std::integer_sequence<int, V...>) {
    static constexpr TileFn table[] = {&tile<MR, V + 1, false, STRIDED_A, ROWS_A>...};
    table[(cols - 1) / 16](kc, a, b, c, ldc, alpha, beta, cols, nullptr, nullptr, a_step, a_next,
                           a_row);
  }

  // A read in place has one k step per cache line (or two): each is prefetched into L1
  // kPrefetchStridedA steps ahead. Few: with rows a multiple of 4 KB apart (the FC weights) all
  // of a tile's A lines fall into one L1 set, whose 8 ways must also hold the lines in use.
  static constexpr int kPrefetchB = 8, kPrefetchC = 128, kPrefetchStridedA = 4;
  static constexpr int kRowsAPrefetch = 48;
  // Every tile reads A in place also when the k steps are a multiple of 4 KB apart (one L1 set
  // for all of a tile's A lines; no run_strided_a_packing): with MR*NV FMAs per step there is
  // time to refetch them (14x32: fc6 forward 1.06x, fc7 1.09x as fast as packed; 6x64's 24
  // FMAs per step taken to be alike, not measured).

  template <int ROWS, int VECS, decltype(_MM_HINT_T0) HINT>
  static inline void prefetch_c(const float* c, int64_t ldc) {
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * v), HINT);
  }

  // ROWS x (16 * VECS) of the tile, VECS <= NV; the packed B panel keeps its NR-float k steps.
  template <int ROWS, int VECS, bool GATHER = false, bool STRIDED_A = false, bool ROWS_A = false>
  static void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                   float beta, int cols, const float* const* rows_b = nullptr,
                   float* packed_b = nullptr, int64_t a_step = MR,
                   const float* a_next = nullptr, int64_t a_row = 0) {
    if (!STRIDED_A) a_step = ROWS_A ? 1 : MR;
    __m512 acc[ROWS][VECS];
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) acc[r][v] = _mm512_setzero_ps();
    if (STREAM_B)
      prefetch_c<ROWS, VECS, _MM_HINT_T1>(c, ldc);
    else
      prefetch_c<ROWS, VECS, _MM_HINT_T0>(c, ldc);
    const int64_t k_c = std::max<int64_t>(kc - kPrefetchC, 0);
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
      if (STREAM_B && k == k_c) prefetch_c<ROWS, VECS, _MM_HINT_T0>(c, ldc);
      if (STREAM_B && !GATHER) {
#pragma GCC unroll 4
        for (int v = 0; v < VECS; ++v)
          _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchB * NR + 16 * v), _MM_HINT_T0);
      }
      __m512 bv[VECS];
      if (GATHER) {
        const float* ahead = rows_b[std::min<int64_t>(k + kGatherPrefetch, kc - 1)];
#pragma GCC unroll 4
        for (int v = 0; v < VECS; ++v)
          _mm_prefetch(reinterpret_cast<const char*>(ahead + 16 * v), _MM_HINT_T0);
      }
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) {
        if (GATHER) {
          bv[v] = _mm512_loadu_ps(rows_b[k] + 16 * v);
          _mm512_store_ps(packed_b + 16 * v, bv[v]);
        } else {
          bv[v] = _mm512_load_ps(b + 16 * v);
        }
      }
#pragma GCC unroll 16
      for (int r = 0; r < ROWS; ++r) {
        __m512 ar = _mm512_set1_ps(ROWS_A ? a[r * a_row] : a[r]);
#pragma GCC unroll 4
        for (int v = 0; v < VECS; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
      }
      if (STRIDED_A) {
        const float* ahead = a + kPrefetchStridedA * a_step;
        _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(ahead + ROWS - 1), _MM_HINT_T0);
        if (a_next) {
          _mm_prefetch(reinterpret_cast<const char*>(a_next), _MM_HINT_T1);
          _mm_prefetch(reinterpret_cast<const char*>(a_next + MR - 1), _MM_HINT_T1);
          a_next += a_step;
        }
      } else if (ROWS_A) {
        // Each row crosses into a new line every 16 steps: one row's line per step,
        // kRowsAPrefetch floats ahead into L1, and the next tile row's line at this k into L2.
        const int64_t r = k & 15;
        if (r < ROWS) {
          _mm_prefetch(reinterpret_cast<const char*>(a + r * a_row + kRowsAPrefetch),
                       _MM_HINT_T0);
          if (a_next)
            _mm_prefetch(reinterpret_cast<const char*>(a_next + r * a_row + (k & ~int64_t(15))),
                         _MM_HINT_T1);
        }
      } else {
        _mm_prefetch(reinterpret_cast<const char*>(a + 8 * MR), _MM_HINT_T0);
      }
      a += a_step;
      if (GATHER)
        packed_b += NR;
      else
        b += NR;
    }
    __mmask16 mask[VECS];
#pragma GCC unroll 4
    for (int v = 0; v < VECS; ++v) {
      int left = cols - 16 * v;
      mask[v] = left >= 16 ? __mmask16(0xFFFF)
                           : left > 0 ? __mmask16((1u << left) - 1) : __mmask16(0);
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      float* cr = c + r * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < VECS; ++v) {
        __m512 x = _mm512_mul_ps(acc[r][v], va);
        if (beta != 0.f) x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask[v], cr + 16 * v), vb, x);
        _mm512_mask_storeu_ps(cr + 16 * v, mask[v], x);
      }
    }
  }
};

// Variant 3: the blocking above, worked out once from the machine's L2 size.
struct Kernel14x32 : KernelAvx512<14, 2, 256, 14 * 36, 1024, true> {
  static constexpr bool kAlignCPanels = true;  // gemm_driver.h, c_panel_skew
  static gemm_detail::Blocking blocking() {
    static const gemm_detail::Blocking b = [] {
      int64_t kc = std::clamp<int64_t>(cache_sizes().l2 / 2048, 256, 512) / 8 * 8;
      int64_t mc = (int64_t(MC) * KC / kc) / MR * MR;
      return gemm_detail::Blocking{mc, kc, 4 * kc};
    }();
    return b;
  }
};
using Kernel6x64 = KernelAvx512<6, 4, 128, kAvx512_6x64BlockRows, 512, false>;

}  // namespace

void gemm_avx512_14x32(const GemmProblem& p) { gemm_detail::gemm_blocked<Kernel14x32>(p); }
void gemm_avx512_6x64(const GemmProblem& p) { gemm_detail::gemm_blocked<Kernel6x64>(p); }

}  // namespace convnet
