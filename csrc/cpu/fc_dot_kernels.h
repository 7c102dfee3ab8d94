// The FC data gradient as inner products (fc_bwd_data variant kFcDotVariant, fc_dot.h), compiled
// once per SIMD path: fc_dot.cpp (baseline x86-64), fc_dot_avx2.cpp and fc_dot_avx512.cpp include
// this file, and fc_dot.cpp picks one at run time (csrc/cpu/isa.h).
//
//   dx[i, n] = sum over o of w[i, o] * dyT[n, o],   dyT = dy^T, rows of dyt_stride(O) floats, zeros
//                                                   past O
//
// Why not the SGEMM driver: there w (I, O) is the A operand with k = o contiguous, so every pass
// packs all of w (151 MB for AlexNet's fc6) by a transposing gather of rows 16 KB apart, which
// starves at 5-10 GB/s. Here w is read where it lies, each element from memory once per call:
// both operands run contiguously along o, so a register tile of MR rows of w x NC images keeps
// MR*NC vector accumulators whose lanes hold partial sums along o, reduced across lanes at the
// end of each k block and added into dx. dy is transposed once per call (2 MB at 4096 x 128).
//
// The reduction of a whole tile is one transposing fold (tile_sums): accumulators are added
// pairwise after shuffles that line up equal lanes, so the MR*NC sums come out packed, a row of
// dx's NC = 4 images per 128-bit store. Each sum adds its lanes in the order vsum does (lane j +
// j+8, then + j+4, + j+2, + j+1), so tiles cut short at the edges, reduced one accumulator at a
// time, give the same bits as whole tiles.
//
// Loops: threads take fixed contiguous shares of the rows i (each dx row has one writer) -> k
// blocks of kb floats of o (the dyT block, N x kb, stays in L2 while the share's rows stream
// through it) -> tiles of MR rows (the w panel, MR x kb, read from memory by the first image tile
// and from cache by the others) -> tiles of NC images. The sum of a dx element is the same
// sequence of k blocks, lanes and reduction for any thread count, so its bits depend on the SIMD
// path only.
#pragma once
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cache_info.h"
#include "fc.h"
#include "fc_dot.h"
#include "isa.h"
#include "simd_width.h"

namespace convnet {
namespace {

#define FC_DOT_INLINE inline __attribute__((always_inline))

// One SIMD register of floats and its operations, and the register tile (MR x NC) for the path
// this file is compiled for: AVX-512 6 x 4 (24 accumulators + 6 w rows + 1 dyT row = 31 of 32
// registers), AVX2 and SSE 3 x 4 (12 + 3 + 1 = 16 registers). The w panel stays in L1 while the
// dyT block comes from L2, so a step's dyT loads (NC) are what L2 must feed: 4 per 24 FMAs
// rather than 4 x 6's 6, which on a core with full-width AVX-512 FMAs (AMD Zen 5) held the tile
// at ~60% of the FMA peak.
#if defined(__AVX512F__)
typedef __m512 Vec;
constexpr int kTileRows = 6, kTileImages = 4;
FC_DOT_INLINE Vec vzero() { return _mm512_setzero_ps(); }
FC_DOT_INLINE Vec vload(const float* p) { return _mm512_loadu_ps(p); }
FC_DOT_INLINE Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
FC_DOT_INLINE float vsum(Vec v) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
// The folds of tile_sums, each the pairwise add of one vsum step for two vectors at once:
// fold256 (x, y) -> 128-bit lanes (x0 + x2, x1 + x3, y0 + y2, y1 + y3): lane j + j+8;
// fold128 (s, t) -> (s0 + s1, s2 + s3, t0 + t1, t2 + t3): + j+4, a vector per lane;
// fold64 (u, v) -> in each lane (u0 + u2, v0 + v2, u1 + u3, v1 + v3);
// fold32 (m, n) -> in each lane (m0 + m2, m1 + m3, n0 + n2, n1 + n3).
FC_DOT_INLINE Vec fold256(Vec x, Vec y) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
}
FC_DOT_INLINE Vec fold128(Vec s, Vec t) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(s, t, 0x88), _mm512_shuffle_f32x4(s, t, 0xDD));
}
FC_DOT_INLINE Vec fold64(Vec u, Vec v) {
  return _mm512_add_ps(_mm512_unpacklo_ps(u, v), _mm512_unpackhi_ps(u, v));
}
FC_DOT_INLINE Vec fold32(Vec m, Vec n) {
  const __m512d a = _mm512_castps_pd(m), b = _mm512_castps_pd(n);
  return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                       _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
}
// The 6 x 4 tile's sums, row r's four images in sums[r]. Rows 0-3: per image, the four rows'
// accumulators folded into one vector (row r's partial sums in 128-bit lane r), then the four
// images folded together. Rows 4-5: images (0, 2) and (1, 3) folded into two vectors of lanes
// (row 4, row 5) x (first image, second), then those, and the last step adds the images 2-3
// half to the 0-1 half (brought down by a lane swap).
FC_DOT_INLINE void tile_sums(const Vec (&acc)[kTileRows][kTileImages],
                             __m128 (&sums)[kTileRows]) {
  Vec col[kTileImages];
  for (int c = 0; c < kTileImages; ++c)
    col[c] = fold128(fold256(acc[0][c], acc[1][c]), fold256(acc[2][c], acc[3][c]));
  const Vec top = fold32(fold64(col[0], col[1]), fold64(col[2], col[3]));
  const Vec even = fold128(fold256(acc[4][0], acc[5][0]), fold256(acc[4][2], acc[5][2]));
  const Vec odd = fold128(fold256(acc[4][1], acc[5][1]), fold256(acc[4][3], acc[5][3]));
  const Vec pair = fold64(even, odd);
  const Vec low = fold32(pair, _mm512_shuffle_f32x4(pair, pair, 0x4E));
  sums[0] = _mm512_castps512_ps128(top);
  sums[1] = _mm512_extractf32x4_ps(top, 1);
  sums[2] = _mm512_extractf32x4_ps(top, 2);
  sums[3] = _mm512_extractf32x4_ps(top, 3);
  sums[4] = _mm512_castps512_ps128(low);
  sums[5] = _mm512_extractf32x4_ps(low, 1);
}
#elif defined(__AVX2__)
typedef __m256 Vec;
constexpr int kTileRows = 3, kTileImages = 4;
FC_DOT_INLINE Vec vzero() { return _mm256_setzero_ps(); }
FC_DOT_INLINE Vec vload(const float* p) { return _mm256_loadu_ps(p); }
FC_DOT_INLINE Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
FC_DOT_INLINE float vsum(Vec v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
// The folds of tile_sums, each the pairwise add of one vsum step for two vectors at once:
// fold128 (x, y) -> 128-bit lanes (x0 + x1, y0 + y1): lane j + j+4;
// fold64 (u, v) -> in each lane (u0 + u2, v0 + v2, u1 + u3, v1 + v3);
// fold32 (m, n) -> in each lane (m0 + m2, m1 + m3, n0 + n2, n1 + n3).
FC_DOT_INLINE Vec fold128(Vec x, Vec y) {
  return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
}
FC_DOT_INLINE Vec fold64(Vec u, Vec v) {
  return _mm256_add_ps(_mm256_unpacklo_ps(u, v), _mm256_unpackhi_ps(u, v));
}
FC_DOT_INLINE __m128 fold32(__m128 m, __m128 n) {
  const __m128d a = _mm_castps_pd(m), b = _mm_castps_pd(n);
  return _mm_add_ps(_mm_castpd_ps(_mm_unpacklo_pd(a, b)), _mm_castpd_ps(_mm_unpackhi_pd(a, b)));
}
FC_DOT_INLINE Vec fold32(Vec m, Vec n) {
  const __m256d a = _mm256_castps_pd(m), b = _mm256_castps_pd(n);
  return _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)),
                       _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
}
// The 3 x 4 tile's sums, row r's four images in sums[r]. Rows 0-1: per image, the two rows'
// accumulators folded into one vector (row r's partial sums in 128-bit lane r), then the four
// images folded together. Row 2: images (0, 2) and (1, 3) folded into two vectors of lanes
// (first image, second), then those, and the last step adds the images 2-3 lane to the 0-1 one.
FC_DOT_INLINE void tile_sums(const Vec (&acc)[kTileRows][kTileImages],
                             __m128 (&sums)[kTileRows]) {
  Vec col[kTileImages];
  for (int c = 0; c < kTileImages; ++c) col[c] = fold128(acc[0][c], acc[1][c]);
  const Vec top = fold32(fold64(col[0], col[1]), fold64(col[2], col[3]));
  const Vec pair = fold64(fold128(acc[2][0], acc[2][2]), fold128(acc[2][1], acc[2][3]));
  sums[0] = _mm256_castps256_ps128(top);
  sums[1] = _mm256_extractf128_ps(top, 1);
  sums[2] = fold32(_mm256_castps256_ps128(pair), _mm256_extractf128_ps(pair, 1));
}
#else
typedef __m128 Vec;
constexpr int kTileRows = 3, kTileImages = 4;
FC_DOT_INLINE Vec vzero() { return _mm_setzero_ps(); }
FC_DOT_INLINE Vec vload(const float* p) { return _mm_loadu_ps(p); }
FC_DOT_INLINE Vec vfma(Vec a, Vec b, Vec c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
FC_DOT_INLINE float vsum(Vec v) {
  // SSE2 only: the high pair onto the low, then lane 1 onto lane 0.
  Vec q = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}
// The 3 x 4 tile's sums, row r's four images in sums[r]: per row, images (0, 1) and (2, 3) are
// folded into lanes (u0 + u2, v0 + v2, u1 + u3, v1 + v3), then the two halves are added.
FC_DOT_INLINE void tile_sums(const Vec (&acc)[kTileRows][kTileImages],
                             __m128 (&sums)[kTileRows]) {
  for (int r = 0; r < kTileRows; ++r) {
    const Vec (&a)[kTileImages] = acc[r];
    const Vec lo = _mm_add_ps(_mm_unpacklo_ps(a[0], a[1]), _mm_unpackhi_ps(a[0], a[1]));
    const Vec hi = _mm_add_ps(_mm_unpacklo_ps(a[2], a[3]), _mm_unpackhi_ps(a[2], a[3]));
    sums[r] = _mm_add_ps(_mm_movelh_ps(lo, hi), _mm_movehl_ps(hi, lo));
  }
}
#endif
static_assert(kTileImages == 4, "tile_sums packs a row's sums in one 128-bit vector");

// The last, partial vector of a w row (len < kSimdFloats floats), zeros past it: w is not padded,
// and a load past the row would read the next row (or past the array). Once per tile per k block
// where o is not whole vectors (fc8's 1000 at AVX-512): a masked load on the AVX paths, as a copy
// through the stack stalls each tile on the store-to-load forward of its MR rows.
FC_DOT_INLINE Vec vload_part(const float* p, int64_t len) {
#if defined(__AVX512F__)
  return _mm512_maskz_loadu_ps(__mmask16((1u << len) - 1), p);
#elif defined(__AVX2__)
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(len)), lanes));
#else
  alignas(64) float part[kSimdFloats] = {};
  std::memcpy(part, p, len * sizeof(float));
  return vload(part);
#endif
}

// One register tile: dx[r, c] (+)= sum over the block of w rows r x dyT rows c. `full` whole
// vectors of o, then `part` (< kSimdFloats) more floats, which the dyT rows have (zero-padded).
// With `next` (the panel after this one, MR rows at ldw), the tile also prefetches it into L2 a
// line per row per step: w comes from memory once, in 4 KB pieces of rows 16 KB apart that the
// hardware prefetchers start too late on, so the first image tile of each panel fetches the next
// one while it computes.
template <int MR, int NC, bool kPrefetch>
FC_DOT_INLINE void dot_tile(const float* w, const float* next, int64_t ldw, const float* dyt,
                            int64_t ldt, int64_t full, int64_t part, float* dx, int64_t ldx,
                            bool add) {
  const float* wr[MR];
  const float* nr[MR];
  const float* tc[NC];
  for (int r = 0; r < MR; ++r) wr[r] = w + r * ldw, nr[r] = next + r * ldw;
  for (int c = 0; c < NC; ++c) tc[c] = dyt + c * ldt;
  Vec acc[MR][NC];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NC; ++c) acc[r][c] = vzero();
  auto step = [&](const Vec (&a)[MR], int64_t o) {
    for (int c = 0; c < NC; ++c) {
      Vec b = vload(tc[c] + o);
      for (int r = 0; r < MR; ++r) acc[r][c] = vfma(a[r], b, acc[r][c]);
    }
  };
  const int64_t end = full * kSimdFloats;
  for (int64_t o = 0; o < end; o += kSimdFloats) {
    Vec a[MR];
    for (int r = 0; r < MR; ++r) a[r] = vload(wr[r] + o);
    if constexpr (kPrefetch)
      for (int r = 0; r < MR; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(nr[r] + o), _MM_HINT_T1);
    step(a, o);
  }
  if (part) {
    Vec a[MR];
    for (int r = 0; r < MR; ++r) a[r] = vload_part(wr[r] + end, part);
    step(a, end);
  }
  if constexpr (MR == kTileRows && NC == kTileImages) {
    __m128 sums[MR];
    tile_sums(acc, sums);
    for (int r = 0; r < MR; ++r) {
      float* d = dx + r * ldx;
      _mm_storeu_ps(d, add ? _mm_add_ps(_mm_loadu_ps(d), sums[r]) : sums[r]);
    }
  } else {
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < NC; ++c) {
        const float s = vsum(acc[r][c]);
        float& d = dx[r * ldx + c];
        d = add ? d + s : s;
      }
  }
}

// The last `rest` (1 .. NC) images of a panel, in one tile NC wide or narrower.
template <int MR, int NC>
FC_DOT_INLINE void dot_rest(int64_t rest, const float* w, int64_t ldw, const float* dyt,
                            int64_t ldt, int64_t full, int64_t part, float* dx, int64_t ldx,
                            bool add) {
  if constexpr (NC > 1)
    if (rest < NC) return dot_rest<MR, NC - 1>(rest, w, ldw, dyt, ldt, full, part, dx, ldx, add);
  dot_tile<MR, NC, false>(w, w, ldw, dyt, ldt, full, part, dx, ldx, add);
}

// The tiles of one w panel (mr rows, one k block) over all images: whole NC-image tiles, then
// the remaining images in one narrower tile. The first tile prefetches `next` (the next panel).
template <int MR>
FC_DOT_INLINE void dot_panel(const float* w, const float* next, int64_t ldw, const float* dyt,
                             int64_t ldt, int64_t images, int64_t full, int64_t part, float* dx,
                             int64_t ldx, bool add) {
  int64_t n = 0;
  if (images >= kTileImages) {
    dot_tile<MR, kTileImages, true>(w, next, ldw, dyt, ldt, full, part, dx, ldx, add);
    n = kTileImages;
  }
  for (; n + kTileImages <= images; n += kTileImages)
    dot_tile<MR, kTileImages, false>(w, next, ldw, dyt + n * ldt, ldt, full, part, dx + n, ldx,
                                     add);
  if (n < images) dot_rest<MR, kTileImages - 1>(images - n, w, ldw, dyt + n * ldt, ldt, full,
                                                 part, dx + n, ldx, add);
}

// The share's last `rows` (1 .. MR) rows of w, in one panel MR rows high or lower.
template <int MR>
FC_DOT_INLINE void dot_rows(int64_t rows, const float* w, const float* next, int64_t ldw,
                            const float* dyt, int64_t ldt, int64_t images, int64_t full,
                            int64_t part, float* dx, int64_t ldx, bool add) {
  if constexpr (MR > 1)
    if (rows < MR)
      return dot_rows<MR - 1>(rows, w, next, ldw, dyt, ldt, images, full, part, dx, ldx, add);
  dot_panel<MR>(w, next, ldw, dyt, ldt, images, full, part, dx, ldx, add);
}

// dyT (N, ldt) = dy^T (dy (O, N)), zeros in o = O .. ldt: images [n0, n1). Blocks of 64 rows of
// dy, so the lines it reads down a column stay in L1 while the images walk them.
void transpose_dy(const float* dy, int64_t outputs, int64_t images, float* dyt, int64_t ldt,
                  int64_t n0, int64_t n1) {
  constexpr int64_t kRows = 64;
  for (int64_t o0 = 0; o0 < outputs; o0 += kRows) {
    const int64_t o1 = std::min(outputs, o0 + kRows);
    for (int64_t n = n0; n < n1; ++n) {
      float* t = dyt + n * ldt;
      const float* d = dy + n;
      for (int64_t o = o0; o < o1; ++o) t[o] = d[o * images];
    }
  }
  for (int64_t n = n0; n < n1; ++n)
    std::fill(dyt + n * ldt + outputs, dyt + (n + 1) * ldt, 0.f);
}

// Floats of o per k block: the dyT block (N x kb) fills half of L2, leaving the rest to the w
// panels streaming through and to dx's rows, and the w panel (MR x kb), read by every image tile
// from L1, fills at most half of L1 (Zen 5, AVX-512, 64 images, fc6 / fc7: the 6-row panel of 2048
// floats, 48 KB, ran at 129-131 GFLOP/s, of 1024 floats at 166-167; a third of L1 lost at 64 and
// 128 images); whole vectors, at least 16 of them (the tile's reduction, once per k block, stays
// a small share), at most all of o.
int64_t k_block(int64_t outputs, int64_t images) {
  const CacheSizes& cache = cache_sizes();
  const int64_t fit =
      std::min(cache.l2 / 2 / images, cache.l1d / 2 / kTileRows) / int64_t(sizeof(float));
  const int64_t kb = std::max<int64_t>(16 * kSimdFloats, fit / kSimdFloats * kSimdFloats);
  return std::min(kb, (outputs + kSimdFloats - 1) / kSimdFloats * kSimdFloats);
}

// Floats per dyT row: o rounded up to whole cache lines, plus one line. With a power of two
// (4096 floats: 16 KB) a tile's NC rows and its MR w rows (16 KB apart too) would all fall in
// one L1 set at each step, more lines than its 8 ways hold.
int64_t dyt_stride(int64_t outputs) {
  constexpr int64_t kLine = 64 / sizeof(float);
  return (outputs + kLine - 1) / kLine * kLine + kLine;
}

void fc_bwd_data_dot_impl(const FcParams& p, const float* dy, const float* w, float* dx,
                          bool accumulate) {
  const int64_t in = p.inputs, out = p.outputs, images = p.images;
  if (in == 0 || images == 0) return;
  if (out == 0) {
    if (!accumulate) std::fill(dx, dx + in * images, 0.f);
    return;
  }
  const int64_t ldt = dyt_stride(out);
  thread_local std::vector<float> scratch;
  if (int64_t(scratch.size()) < images * ldt) scratch.resize(images * ldt);
  float* dyt = scratch.data();
  const int64_t kb = k_block(out, images);
  // Shares of whole row tiles, fixed by the thread count alone.
  const int64_t tiles = (in + kTileRows - 1) / kTileRows;
  const int threads = int(std::min<int64_t>(omp_get_max_threads(), tiles));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    transpose_dy(dy, out, images, dyt, ldt, images * t / nt, images * (t + 1) / nt);
#pragma omp barrier
    const int64_t i0 = std::min(in, tiles * t / nt * kTileRows);
    const int64_t i1 = std::min(in, tiles * (t + 1) / nt * kTileRows);
    for (int64_t o0 = 0; o0 < out; o0 += kb) {
      const int64_t len = std::min(kb, out - o0);
      const int64_t full = len / kSimdFloats, part = len % kSimdFloats;
      const bool add = accumulate || o0 > 0;
      const float* tblock = dyt + o0;
      // The panel after the share's last one is its first at the next k block.
      const float* next_block = w + i0 * out + std::min(o0 + kb, out - 1);
      int64_t i = i0;
      for (; i + kTileRows <= i1; i += kTileRows) {
        const float* next = i + kTileRows < i1 ? w + (i + kTileRows) * out + o0 : next_block;
        dot_panel<kTileRows>(w + i * out + o0, next, out, tblock, ldt, images, full, part,
                             dx + i * images, images, add);
      }
      if (i < i1)
        dot_rows<kTileRows - 1>(i1 - i, w + i * out + o0, next_block, out, tblock, ldt, images,
                                full, part, dx + i * images, images, add);
    }
  }
}

}  // namespace

#define CONVNET_FC_DOT_ENTRY_POINTS(isa, ENTRY)                                                \
  namespace isa {                                                                            \
  void fc_bwd_data_dot(const FcParams& p, const float* dy, const float* w, float* dx,        \
                       bool accumulate) ENTRY(fc_bwd_data_dot_impl(p, dy, w, dx, accumulate)) \
  }

CONVNET_FC_DOT_ENTRY_POINTS(avx512, CONVNET_DECLARE_ENTRY)
CONVNET_FC_DOT_ENTRY_POINTS(avx2, CONVNET_DECLARE_ENTRY)

}  // namespace convnet
