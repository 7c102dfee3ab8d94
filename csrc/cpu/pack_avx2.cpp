// The packs of the GEMM operands on AVX2.
// Transposing: 8 rows x 8 k steps per block, loaded as 8 vectors, transposed in registers
// (unpack -> shuffle -> 128-bit lane permutes), stored as 8 k steps of the panel. Panels of at
// most 8 rows (the 6-row A panels of the AVX2 kernel) store each k step as a full vector that
// spills into the next k step's slots, which the next store then overwrites: only the block's
// last k step needs a masked store (slow on AMD cores).
// Copying (rows contiguous in the source, k steps k_stride apart): see pack_rows_avx2.
#include <immintrin.h>

#include <algorithm>

#include "gemm_pack.h"

namespace convnet {

static inline void transpose8x8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: t[2i] = a0 b0 a1 b1, t[2i+1] = a2 b2 a3 b3
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // lane L of r[4i+j]: rows 4i..4i+3 at column 4L+j
    r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {  // rows 0-3 and 4-7 of column j (low lane) and 4+j (high lane)
    t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
    t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
  }
  for (int i = 0; i < 8; ++i) r[i] = t[i];
}

static inline __m256i lane_mask(int n) {  // the first n (0..8) lanes
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// A full panel of W <= 8 rows (all present), k steps [0, steps) in blocks of 8: plain loads and
// stores, each k step's store spilling 8 - W floats into the next step's slots, written after it
// (the caller packs at least one more step). Without the general loop's per-row branches the
// block stays in registers, where that loop kept it on the stack. The 6x16 kernel's A pack took
// 0.83% of a 1024^2 SGEMM's samples (perf; AMD Zen 5, AVX2, one thread); with this loop and the
// driver's thread_local pointers taken once, the SGEMM ran 1.006x as fast (thread CPU time),
// the pointers alone 1.003x in another run.
// Each row is prefetched kTransposePrefetch floats (8 lines) ahead: a panel reads its rows for
// one k block only (384 floats, 24 lines, for the 6x16 kernel on a 48 KB L1), too short a run
// for the hardware's stream prefetch to get ahead of, and a square SGEMM's rows lie 8-16 KB
// apart. SGEMM 2048^2 1.004-1.015x as fast over six runs (median 1.01), 3072^2 / 4096^2
// 1.002-1.007 / 1.008x, 512^2 / 1024^2 level; one thread at 1024^2 1.015x, at 2048^2 level
// (AMD Zen 5, AVX2, two threads unless said, alternating in one process). 64 floats ahead:
// 1.009x at 2048^2; 256 / 512: 1.011 / 1.006x.
constexpr int64_t kTransposePrefetch = 128;
template <int W>
static void transpose_full_panel(const float* const* rows, int64_t steps, float* dst) {
  const float* src[W];
  for (int i = 0; i < W; ++i) src[i] = rows[i];
  for (int64_t t0 = 0; t0 < steps; t0 += 8) {
    __m256 r[8];
    for (int i = 0; i < W; ++i)
      _mm_prefetch(reinterpret_cast<const char*>(src[i] + t0 + kTransposePrefetch), _MM_HINT_T0);
    for (int i = 0; i < 8; ++i) r[i] = i < W ? _mm256_loadu_ps(src[i] + t0) : _mm256_setzero_ps();
    transpose8x8(r);
    float* d = dst + t0 * W;
    for (int t = 0; t < 8; ++t) _mm256_storeu_ps(d + t * W, r[t]);
  }
}

void pack_transpose_avx2(const float* const* rows, int width, int64_t len, float* dst) {
  const int64_t end = len * width;
  int64_t first = 0;  // k steps already packed by transpose_full_panel
  if (width == 6 && std::all_of(rows, rows + 6, [](const float* r) { return r != nullptr; })) {
    first = (len - 1) / 8 * 8;  // the last block (and its last step's store) below
    transpose_full_panel<6>(rows, first, dst);
  }
  for (int g = 0; g < width; g += 8) {
    int gw = std::min(8, width - g);
    __m256i store = lane_mask(gw);
    bool spill = width <= 8;  // one group: a store may run into later k steps' slots
    for (int64_t t0 = first; t0 < len; t0 += 8) {
      int tn = int(std::min<int64_t>(8, len - t0));
      __m256 r[8];
      if (tn == 8) {
        for (int i = 0; i < 8; ++i)
          r[i] = i < gw && rows[g + i] ? _mm256_loadu_ps(rows[g + i] + t0) : _mm256_setzero_ps();
      } else {
        __m256i load = lane_mask(tn);
        for (int i = 0; i < 8; ++i)
          r[i] = i < gw && rows[g + i] ? _mm256_maskload_ps(rows[g + i] + t0, load)
                                       : _mm256_setzero_ps();
      }
      transpose8x8(r);
      float* d = dst + t0 * width + g;
      if (gw == 8) {
        for (int t = 0; t < tn; ++t) _mm256_storeu_ps(d + t * width, r[t]);
      } else {
        // Only a store that would leave the panel is masked: the last k step's spill lands in
        // the next block's first slots, written after it.
        int t = 0;
        if (spill)
          for (; t < tn && (t0 + t) * width + g + 8 <= end; ++t)
            _mm256_storeu_ps(d + t * width, r[t]);
        for (; t < tn; ++t) _mm256_maskstore_ps(d + t * width, store, r[t]);
      }
    }
  }
}

// As pack_rows_avx512 (pack_avx512.cpp), with 8-float vectors: the segments
// pack_rows_prefetch_steps() ahead prefetched into L2, whole-vector copies whose spill lands in
// later steps of the same panel, a masked store only where a vector would leave the panel, a
// masked load only where a vector passes `rows` (the 6-row A panels load 8 floats: the next
// panel's 2 rows spill with the store; 9.2 GB/s on fc6's w^T against 7.5 with masked loads).
// Blocks of kStepsPerBlock k steps, panel by panel within a block: each panel then receives
// one contiguous run of stores (8 steps of a 6-row panel: 192 bytes) where step by step across
// all panels every store went to another panel's line (56 of them for a 336-row A block). fc6's
// w^T (rows 16 KB apart) packed at 7.5 GB/s so against 3.1 (one thread, Zen 4). 8 steps: their
// source segments, when a multiple of 4 KB apart, share L1 sets, 8 ways deep on the x86 cores
// this runs on (16 steps: 5.1 GB/s).
void pack_rows_avx2(const float* src, int64_t k_stride, int64_t rows, int64_t kc, int width,
                    float* dst) {
  constexpr int64_t kStepsPerBlock = 8;
  const int64_t panels = (rows + width - 1) / width, panel_size = kc * width;
  const int vecs = (width + 7) / 8;
  const int64_t segment_bytes = rows * int64_t(sizeof(float));
  const int64_t ahead_steps = pack_rows_prefetch_steps(segment_bytes);
  for (int64_t t0 = 0; t0 < kc; t0 += kStepsPerBlock) {
    const int64_t t1 = std::min(kc, t0 + kStepsPerBlock);
    for (int64_t t = t0; t < t1 && t + ahead_steps < kc; ++t) {
      const char* ahead = reinterpret_cast<const char*>(src + (t + ahead_steps) * k_stride);
      for (int64_t b = 0; b < segment_bytes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T1);
      _mm_prefetch(ahead + segment_bytes - 1, _MM_HINT_T1);
    }
    for (int64_t q = 0; q < panels; ++q) {
      const int64_t valid = std::min<int64_t>(width, rows - q * width);
      const float* s = src + t0 * k_stride + q * width;
      float* d = dst + q * panel_size + t0 * width;
      // Vector v loads plainly when the segment holds 8 floats from its start and every lane
      // inside the panel's step is a valid row: lanes past the step (the next panel's rows)
      // only spill into the next step's slots.
      unsigned plain = 0;
      for (int v = 0; v < vecs; ++v) {
        const int64_t lo = 8 * v, lanes = std::min<int64_t>(8, width - lo);
        if (valid - lo >= lanes && rows - q * width - lo >= 8) plain |= 1u << v;
      }
      for (int64_t t = t0; t < t1; ++t, s += k_stride, d += width) {
        const int64_t step = t * width;
        for (int v = 0; v < vecs; ++v) {
          const int64_t lo = 8 * v;
          const int64_t in_rows = std::max<int64_t>(valid - lo, 0);
          const __m256 x = plain >> v & 1u ? _mm256_loadu_ps(s + lo)
                                           : _mm256_maskload_ps(s + lo, lane_mask(int(in_rows)));
          if (step + lo + 8 <= panel_size)
            _mm256_storeu_ps(d + lo, x);
          else
            _mm256_maskstore_ps(d + lo, lane_mask(width - int(lo)), x);
        }
      }
    }
  }
}

}  // namespace convnet
