// The direct weight gradient of a convolution (conv_bwd_weights variant 5, conv.cpp), compiled once
// per SIMD path: conv_wgrad.cpp (baseline x86-64), conv_wgrad_avx2.cpp and conv_wgrad_avx512.cpp
// include this file, and conv_wgrad.cpp picks one at run time (csrc/cpu/isa.h).
//
//   dw_g (taps, Fg) = im2col(x_g) (taps, P*N) x dy_g^T (P*N, Fg),  taps = (c, ky, kx), P = Ho*Wo
//
// Why not the implicit GEMM: there, im2col is the A operand, packed by a transposing gather of
// every one of its taps x P*N elements, each then used for only Fg multiply-adds (32 or 64 in the
// CIFAR net), so the packing is a large share of the pass. Here nothing of x is packed. dy
// (Fg, P*N) is transposed block by block into dyT (chunks of NR filters, columns, NR),
// zero-padded past Fg (Fg floats per column, a 1/taps share of the reads above), and a register
// tile of MR taps x NR filters reads x where it lies: at each k step (position, image n) it
// broadcasts x[c, iy + ky, ix + kx, n] for its MR taps straight from the image rows (MR row
// pointers per position, a row of zeros for taps in the padding) and multiplies it with one
// NR-wide row of dyT.
//
// Loops: threads take fixed contiguous shares of the positions (the reduction) and sum into
// private (taps, Fp) buffers, added into dw in thread order at the end, so the bits depend on
// the thread count only, never on timing. Within a share: blocks of about kBlockCols columns
// (whole positions), each transposed into the thread's dyT block just before use (a transpose of
// all of dy first sent 16 MB through memory twice in conv1 and was slower than the GEMM) ->
// tiles of MR taps -> chunks of NR filters: the tile's sums are read from the private buffer,
// run over the block's positions and images in registers, and written back.
//
// Tile shapes (MR x NR, NR = NV vectors of VW = kSimdFloats floats): AVX-512 (32 registers)
// 12 x 16, 8 x 32, 8 x 48 or 6 x 64, AVX2 and baseline SSE (16 registers) 8 x VW or 6 x 2VW,
// the widest whose filter chunks pad Fg the least (Fg = 32: one 8 x 32 chunk; 48 and 96:
// 8 x 48; 128: 6 x 64). MR row pointers, the NV loads and the MR*NV accumulators fit the
// registers.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv.h"
#include "conv_wgrad.h"
#include "conv_window_prefetch.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "simd_width.h"

namespace convnet {
namespace {

// One SIMD register of floats (GCC vector extension: the file's -m flags pick the instructions).
// Loads and stores through it are aligned: dyT rows and the sums are whole vectors from 64-byte
// aligned buffers.
typedef float WVec __attribute__((vector_size(kSimdFloats * 4)));

// About this many columns (positions x images) per block: the block's dyT rows (cols x NR floats,
// 16 KB at NR = 32, 32 KB at 64) stay in L1 beside the tiles' image rows while every tap tile
// reads them (256 columns, 32 KB at NR = 32, ran conv1 and conv3 of the CIFAR net 10-12% slower
// on the 48 KB L1; at batch 128 a block is one position).
constexpr int64_t kBlockCols = 128;

// acc (MR rows, stride ld) += sum over the block's positions p and images n of
//   rows[p * row_step + i][n] * b[(p * images + n) * NR .. + NR]
// (row_step >= MR: a tap tile's row pointers per position; a last, partial tile runs a narrower MR)
template <int MR, int NV>
void wgrad_tile(const float* const* rows, int64_t row_step, int64_t positions, int64_t images,
                const float* b, float* acc, int64_t ld) {
  constexpr int NR = NV * kSimdFloats;
  WVec c[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      c[i][v] = *reinterpret_cast<const WVec*>(acc + i * ld + v * kSimdFloats);
  for (int64_t p = 0; p < positions; ++p, rows += row_step) {
    const float* r[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) r[i] = rows[i];
    for (int64_t n = 0; n < images; ++n, b += NR) {
      WVec bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = *reinterpret_cast<const WVec*>(b + v * kSimdFloats);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const float a = r[i][n];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) c[i][v] += bv[v] * a;
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) *reinterpret_cast<WVec*>(acc + i * ld + v * kSimdFloats) = c[i][v];
}

// The last tap tile when the taps are not a multiple of MR: a tile of exactly its `live` taps
// (1 <= live < MR), so no multiply-adds are spent on padding rows (conv1 of the CIFAR net: 75
// taps in 8-tap tiles, 80 rows run, 75 with this). Each tap's sums run in the same order either
// way: the bits do not change.
template <int MR, int NV>
void wgrad_tail_tile(int live, const float* const* rows, int64_t row_step, int64_t positions,
                     int64_t images, const float* b, float* acc, int64_t ld) {
  if constexpr (MR > 1) {
    if (live < MR)
      return wgrad_tail_tile<MR - 1, NV>(live, rows, row_step, positions, images, b, acc, ld);
  }
  wgrad_tile<MR, NV>(rows, row_step, positions, images, b, acc, ld);
}

// Per issuing thread (two logical CPU devices issue from two threads), grow-only.
struct WgradScratch {
  AlignedScratch partials, zeros;
  std::vector<int64_t> tap_offset;  // ((c * H + ky) * W + kx) * N: tap (c, ky, kx)'s x offset
  std::vector<int> tap_ky, tap_kx;
};

template <int MR, int NV>
void wgrad_group(const ConvParams& p, const float* x, const float* dy, float* dw, bool accumulate,
                 WgradScratch& s) {
  constexpr int NR = NV * kSimdFloats;
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups, fs = p.filter_size;
  const int64_t N = p.images, H = p.height, W = p.width;
  const int64_t taps = cg * fs * fs, tiles = (taps + MR - 1) / MR;
  const int64_t positions = int64_t(p.out_h) * p.out_w, cols = positions * N;
  const int64_t chunks = (fg + NR - 1) / NR, fp = chunks * NR;
  const int64_t block = std::max<int64_t>(1, kBlockCols / N);  // positions per block

  float* zeros = s.zeros.get(size_t(N));
  std::fill_n(zeros, N, 0.f);
  s.tap_offset.resize(size_t(tiles * MR));
  s.tap_ky.resize(size_t(tiles * MR)), s.tap_kx.resize(size_t(tiles * MR));
  for (int64_t t = 0; t < tiles * MR; ++t) {
    // Taps past the last (rows of the last tile beyond `live`, never read) point at zeros.
    int64_t c = t / (fs * fs), ky = (t / fs) % fs, kx = t % fs;
    s.tap_ky[t] = t < taps ? int(ky) : -1, s.tap_kx[t] = int(kx);
    s.tap_offset[t] = ((c * H + ky) * W + kx) * N;
  }

  // The next tile's image rows are prefetched into L1 while a tile runs where that pays
  // (image_rows_outgrow_l2): there a tile's first pass over its rows waited on them, its new
  // columns from L3 or memory (48 filters, one 48-wide chunk per tile at AVX-512, had no second
  // pass to share the wait).
  const bool fetch_ahead = image_rows_outgrow_l2(p.stride, cg, fs, W * N);
  const double flops = 2.0 * double(taps) * double(fg) * double(cols);
  const int threads = flops < 4e6 ? 1 : int(std::min<int64_t>(omp_get_max_threads(), positions));
  const size_t part = size_t(tiles * MR) * fp;
  float* partials = s.partials.get(part * threads);
  const int64_t* tap_offset = s.tap_offset.data();
  const int* tap_ky = s.tap_ky.data();
  const int* tap_kx = s.tap_kx.data();
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* acc = partials + part * t;
    std::fill_n(acc, part, 0.f);
    const int64_t p0 = positions * t / nt, p1 = positions * (t + 1) / nt;
    thread_local AlignedScratch block_dyt;  // per team thread
    float* bt = block_dyt.get(size_t(chunks * block * N * NR));
    std::vector<const float*> rows(size_t(block * MR));
    std::vector<int64_t> corner_y(static_cast<size_t>(block)), corner_x(corner_y);
    for (int64_t pb = p0; pb < p1; pb += block) {
      const int64_t np = std::min(block, p1 - pb), bcols = np * N;
      for (int64_t q = 0; q < np; ++q) {  // each position's window corner in the image
        corner_y[q] = (pb + q) / p.out_w * p.stride - p.padding;
        corner_x[q] = (pb + q) % p.out_w * p.stride - p.padding;
      }
      // The block's dyT[chunk][col][j] = dy[chunk * NR + j][pb * N + col] (zero for filters
      // past fg), by the in-register transposes of the GEMM's packing; used while in L1/L2.
      for (int64_t q = 0; q < chunks; ++q) {
        const float* src[NR];
        for (int j = 0; j < NR; ++j)
          src[j] = q * NR + j < fg ? dy + (q * NR + j) * cols + pb * N : nullptr;
        pack_transpose(src, NR, bcols, bt + q * bcols * NR);
      }
      // Tap `tap`'s image row at the block's position q (zeros outside the image).
      auto row_of = [&](int64_t q, int64_t tap) {
        const int64_t iy0 = corner_y[q], ix0 = corner_x[q];
        const int64_t iy = iy0 + tap_ky[tap], ix = ix0 + tap_kx[tap];
        const bool inside = tap_ky[tap] >= 0 && iy >= 0 && iy < H && ix >= 0 && ix < W;
        return inside ? x + (tap_offset[tap] + (iy0 * W + ix0) * N) : zeros;
      };
      for (int64_t tile = 0; tile < tiles; ++tile) {
        // The tile's MR row pointers at each position of the block.
        for (int64_t q = 0; q < np; ++q)
          for (int i = 0; i < MR; ++i) rows[q * MR + i] = row_of(q, tile * MR + i);
        // The next tile's rows into L1 meanwhile, where that pays (fetch_ahead).
        if (fetch_ahead && tile + 1 < tiles)
          for (int64_t q = 0; q < np; ++q)
            for (int i = 0; i < MR; ++i) {
              const char* r = reinterpret_cast<const char*>(row_of(q, (tile + 1) * MR + i));
              for (int64_t off = 0; off < N * int64_t(sizeof(float)); off += 64)
                __builtin_prefetch(r + off, 0, 3);
            }
        // The next block's dy rows, a share of its filters before each tile: the rows lie a
        // plane apart (512 KB in the CIFAR net's conv1, so all in one cache set), short streams
        // the hardware prefetchers do not follow, and the block's transpose otherwise waits on
        // each of them. Spread over the tiles, not all before the last ones (which ran no
        // faster): each prefetch has tiles of multiply-adds to arrive behind.
        const int64_t next = pb + np;
        if (next < p1) {
          const int64_t bytes = std::min(block, p1 - next) * N * int64_t(sizeof(float));
          for (int64_t f = fg * tile / tiles; f < fg * (tile + 1) / tiles; ++f) {
            const char* row = reinterpret_cast<const char*>(dy + f * cols + next * N);
            for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(row + off, 0, 3);
          }
        }
        const int live = int(std::min<int64_t>(MR, taps - tile * MR));
        for (int64_t q = 0; q < chunks; ++q) {
          float* sums = acc + tile * MR * fp + q * NR;
          if (live == MR)
            wgrad_tile<MR, NV>(rows.data(), MR, np, N, bt + q * bcols * NR, sums, fp);
          else
            wgrad_tail_tile<MR - 1, NV>(live, rows.data(), MR, np, N, bt + q * bcols * NR, sums,
                                        fp);
        }
      }
    }
#pragma omp barrier
    // dw (taps, F) (+)= the threads' sums in thread order; rows split between the threads.
#pragma omp for schedule(static)
    for (int64_t tap = 0; tap < taps; ++tap) {
      float* d = dw + tap * p.filters;
      for (int64_t f = 0; f < fg; ++f) {
        float sum = partials[tap * fp + f];
        for (int u = 1; u < nt; ++u) sum += partials[part * u + tap * fp + f];
        d[f] = accumulate ? d[f] + sum : sum;
      }
    }
  }
}

void conv_bwd_weights_direct_impl(const ConvParams& p, const float* x, const float* dy,
                                  float* dw, bool accumulate) {
  thread_local WgradScratch scratch;
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  const int64_t in_plane = int64_t(p.height) * p.width * p.images;
  const int64_t out_cols = int64_t(p.out_h) * p.out_w * p.images;
  for (int g = 0; g < p.groups; ++g) {
    const float* xg = x + g * cg * in_plane;
    const float* dyg = dy + g * fg * out_cols;
    float* dwg = dw + g * fg;
    // The widest tile whose filter chunks pad the fewest columns (the last chunk is partial).
    auto padded = [fg](int64_t nr) { return (fg + nr - 1) / nr * nr; };
    if (kSimdFloats == 16) {
      int nv = 4;
      for (int v = 3; v >= 1; --v)
        if (padded(16 * v) < padded(16 * nv)) nv = v;
      if (nv == 4)
        wgrad_group<6, 4>(p, xg, dyg, dwg, accumulate, scratch);
      else if (nv == 3)
        wgrad_group<8, 3>(p, xg, dyg, dwg, accumulate, scratch);
      else if (nv == 2)
        wgrad_group<8, 2>(p, xg, dyg, dwg, accumulate, scratch);
      else
        wgrad_group<12, 1>(p, xg, dyg, dwg, accumulate, scratch);
    } else if (padded(2 * kSimdFloats) <= padded(kSimdFloats)) {
      wgrad_group<6, 2>(p, xg, dyg, dwg, accumulate, scratch);
    } else {
      wgrad_group<8, 1>(p, xg, dyg, dwg, accumulate, scratch);
    }
  }
}

}  // namespace

#define CONVNET_WGRAD_ENTRY_POINTS(isa, ENTRY)                                               \
  namespace isa {                                                                          \
  void conv_bwd_weights_direct(const ConvParams& p, const float* x, const float* dy,       \
                               float* dw, bool accumulate)                                 \
      ENTRY(conv_bwd_weights_direct_impl(p, x, dy, dw, accumulate))                        \
  }

CONVNET_WGRAD_ENTRY_POINTS(avx512, CONVNET_DECLARE_ENTRY)
CONVNET_WGRAD_ENTRY_POINTS(avx2, CONVNET_DECLARE_ENTRY)

}  // namespace convnet
