// The a^2 products of the Winograd weight gradient (winograd_wgrad.cpp) on the AVX-512 path as
// dot products: winograd_avx512.cpp compiles them, winograd_wgrad.cpp calls them there.
//
//   du[xi] (m, n) (+)= v[xi] (m, k) w[xi] (n, k)^T,  k = a chunk's columns
//
// Both operands hold k contiguous (the transforms write a row of images at a time), so a GEMM
// micro-kernel, which wants one of them k-major, gets both transposed by its packing: a quarter
// of conv2's weight gradient in the CIFAR net at AVX-512 (perf), beside the micro-kernel's
// 14-row tiles padding m = 32 to 42. Here a register tile of 4 x 4 dot products reads the rows
// where they lie, one vector of k at a time (8 loads for 16 multiply-adds; 16 accumulators and
// the 8 loaded vectors take 24 of the 32 registers), and folds its 16 vectors of partial sums
// into 16 sums at the end of the row (a transposing add tree: 4 levels of two shuffles and one
// add per pair of vectors). Rows past m or n (edge tiles) repeat the last row, their sums
// dropped; the k % 16 columns past the last whole vector are added one by one after the fold.
// Every sum is taken in the same order whatever the threads, so the bits depend on the inputs
// only. The AVX2 path keeps the GEMMs: its 16 registers hold a 2 x 4 tile (6 loads for 8
// multiply-adds), which ran CIFAR's conv3 weight gradient about 12% slower than they do on Zen 4.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "simd_width.h"

namespace convnet {

// Declared for winograd_wgrad.cpp; defined below where the file is compiled for AVX-512.
namespace avx512 {
// For each of `planes` planes p: c + p cplane (m, n; rows n apart) (+)= (a + p aplane) (m rows,
// k floats, rows lda apart) times (b + p bplane) (n rows, k floats, rows ldb apart) transposed.
void winograd_dots(int planes, const float* a, int64_t aplane, int64_t lda, const float* b,
                   int64_t bplane, int64_t ldb, int64_t m, int64_t n, int64_t k, float* c,
                   int64_t cplane, bool accumulate);
}  // namespace avx512

#if defined(__AVX512F__)
namespace {

constexpr int kDotRows = 4, kDotCols = 4;
constexpr int kDotTile = kDotRows * kDotCols;
static_assert(kDotTile % kSimdFloats == 0, "the fold takes groups of kSimdFloats accumulators");

typedef float DotVec __attribute__((vector_size(kSimdFloats * 4)));
typedef float DotVecU __attribute__((vector_size(kSimdFloats * 4), aligned(4)));  // unaligned rows
typedef int32_t DotMask __attribute__((vector_size(kSimdFloats * 4)));

// Lane `lane` of one fold step's shuffle of (x, y) at half-block h: the vectors hold blocks of 2h
// lanes, each block one sum's partials; the step leaves block b holding x's block b folded to h
// lanes, then y's. `high` picks the block's upper halves (added to the lower ones).
constexpr int fold_lane(int lane, int h, bool high) {
  const int block = lane / (2 * h) * 2 * h, within = lane % (2 * h), off = high ? h : 0;
  return within < h ? block + within + off : kSimdFloats + block + within - h + off;
}
template <int H, bool High, int... L>
constexpr DotMask fold_mask(std::integer_sequence<int, L...>) {
  return DotMask{fold_lane(L, H, High)...};
}
template <int H>
inline DotVec fold(DotVec x, DotVec y) {
  constexpr auto lanes = std::make_integer_sequence<int, kSimdFloats>{};
  return __builtin_shuffle(x, y, fold_mask<H, false>(lanes)) +
         __builtin_shuffle(x, y, fold_mask<H, true>(lanes));
}

// Which of a group's kSimdFloats accumulators each lane of the folded vector sums: the fold
// above applied to labels.
constexpr std::array<int, kSimdFloats> fold_order() {
  std::array<std::array<int, kSimdFloats>, kSimdFloats> lab{};
  for (int q = 0; q < kSimdFloats; ++q)
    for (int l = 0; l < kSimdFloats; ++l) lab[q][l] = q;
  int count = kSimdFloats;
  for (int h = kSimdFloats / 2; h >= 1; h /= 2, count /= 2)
    for (int p = 0; p < count / 2; ++p) {
      std::array<int, kSimdFloats> z{};
      for (int l = 0; l < kSimdFloats; ++l) {
        const int src = fold_lane(l, h, false);
        z[l] = src < kSimdFloats ? lab[2 * p][src] : lab[2 * p + 1][src - kSimdFloats];
      }
      lab[p] = z;
    }
  return lab[0];
}

// kSimdFloats vectors of partial sums -> one vector of their sums, in fold_order().
template <int H>
inline void fold_levels(DotVec* v, int count) {
  if constexpr (H >= 1) {
    for (int p = 0; p < count / 2; ++p) v[p] = fold<H>(v[2 * p], v[2 * p + 1]);
    fold_levels<H / 2>(v, count / 2);
  }
}

// c (mr x nr of the tile, rows ldc apart) (+)= the dot products of a's rows a[i] (i < mr) and
// b's rows b[j] (j < nr) over k floats.
inline void dot_tile(const float* const* a, const float* const* b, int64_t k, int mr, int nr,
                     float* c, int64_t ldc, bool accumulate) {
  DotVec acc[kDotTile];
#pragma GCC unroll 16
  for (int q = 0; q < kDotTile; ++q) acc[q] = DotVec{};
  const int64_t kv = k / kSimdFloats * kSimdFloats;
  for (int64_t t = 0; t < kv; t += kSimdFloats) {
    DotVec av[kDotRows], bv[kDotCols];
#pragma GCC unroll 4
    for (int i = 0; i < kDotRows; ++i) av[i] = *reinterpret_cast<const DotVecU*>(a[i] + t);
#pragma GCC unroll 4
    for (int j = 0; j < kDotCols; ++j) bv[j] = *reinterpret_cast<const DotVecU*>(b[j] + t);
#pragma GCC unroll 4
    for (int i = 0; i < kDotRows; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < kDotCols; ++j) acc[i * kDotCols + j] += av[i] * bv[j];
  }
  // Each group of kSimdFloats accumulators folds into one vector of their sums, lane l holding
  // tile element g + l: the accumulators enter the tree where fold_order() puts them there.
  alignas(64) float sums[kDotTile];
  constexpr std::array<int, kSimdFloats> order = fold_order();
#pragma GCC unroll 4
  for (int g = 0; g < kDotTile; g += kSimdFloats) {
    DotVec v[kSimdFloats];
#pragma GCC unroll 16
    for (int l = 0; l < kSimdFloats; ++l) v[order[l]] = acc[g + l];
    fold_levels<kSimdFloats / 2>(v, kSimdFloats);
    *reinterpret_cast<DotVec*>(sums + g) = v[0];
  }
  if (mr == kDotRows && nr == kDotCols && kv == k) {  // a whole tile: bounds known, no tail
#pragma GCC unroll 4
    for (int i = 0; i < kDotRows; ++i) {
      float* ci = c + i * ldc;
      const float* si = sums + i * kDotCols;
#pragma GCC unroll 4
      for (int j = 0; j < kDotCols; ++j) ci[j] = accumulate ? ci[j] + si[j] : si[j];
    }
    return;
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      float s = sums[i * kDotCols + j];
      for (int64_t t = kv; t < k; ++t) s += a[i][t] * b[j][t];
      float* cij = c + i * ldc + j;
      *cij = accumulate ? *cij + s : s;
    }
}

}  // namespace

void avx512::winograd_dots(int planes, const float* a, int64_t aplane, int64_t lda,
                           const float* b, int64_t bplane, int64_t ldb, int64_t m, int64_t n,
                           int64_t k, float* c, int64_t cplane, bool accumulate) {
  for (int p = 0; p < planes; ++p) {
    const float* ap = a + p * aplane;
    const float* bp = b + p * bplane;
    float* cp = c + p * cplane;
    for (int64_t i0 = 0; i0 < m; i0 += kDotRows) {
      const int mr = int(std::min<int64_t>(kDotRows, m - i0));
      const float* ar[kDotRows];
      for (int i = 0; i < kDotRows; ++i) ar[i] = ap + (i0 + std::min(i, mr - 1)) * lda;
      for (int64_t j0 = 0; j0 < n; j0 += kDotCols) {
        const int nr = int(std::min<int64_t>(kDotCols, n - j0));
        const float* br[kDotCols];
        for (int j = 0; j < kDotCols; ++j) br[j] = bp + (j0 + std::min(j, nr - 1)) * ldb;
        dot_tile(ar, br, k, mr, nr, cp + i0 * n + j0, n, accumulate);
      }
    }
  }
}
#endif  // __AVX512F__

}  // namespace convnet
