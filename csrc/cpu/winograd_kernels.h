// The tile transforms of Winograd F(2x2, 3x3) and F(2x2, 5x5) (winograd.cpp, winograd_wgrad.cpp),
// compiled once per SIMD path: winograd.cpp (baseline x86-64), winograd_avx2.cpp and
// winograd_avx512.cpp include this file, and winograd.cpp picks one at run time (csrc/cpu/isa.h).
// Every loop runs along the images, contiguous in the (C, H, W, N) layout, so one a x a tile of
// all images is a^2 rows of N floats (a = 4 for 3x3 filters, 6 for 5x5).
//
// With d an a x a input tile, g the filter, Y the 2x2 output tile (winograd_tiles.h):
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
// The sum over channels of the a^2 elementwise products is a^2 GEMMs, one per position
// xi = a i + j of the transformed tile; these kernels are the transforms on either side of them,
// and the weight gradient's transform of dy (A dY A^T, winograd_wgrad.cpp). Each applies its
// one-dimensional transform to the tile's columns, then to the rows of the result.
//
// Tiles are numbered row-major over the output, tile t covering outputs (2 ty .. 2 ty + 1,
// 2 tx .. 2 tx + 1), ty = t / tiles_w, tx = t % tiles_w; a tile reads inputs from row 2 ty - pad,
// column 2 tx - pad (zero outside the image). A chunk of `ntiles` tiles from `tile0` has
// cols = ntiles * images GEMM columns, column (t - tile0) * images + n.
#pragma once
#include <algorithm>
#include <cstdint>

#include "epilogue.h"
#include "gemm_pack.h"
#include "isa_variants.h"
#include "winograd_tiles.h"

namespace convnet {

// The input of a Winograd convolution for one group, and the output it tiles.
struct WinogradTiles {
  const float* in;                  // (channels, in_h, in_w, images), offset to the group
  int64_t channels, in_h, in_w, images;
  int64_t pad;                      // < 0 crops (the data gradient of padding > r - 1)
  int64_t out_h, out_w, tiles_w;    // tiles_w = ceil(out_w / 2)
  int64_t filter_size;              // r: 3 (F(2x2, 3x3)) or 5 (F(2x2, 5x5))
};

// a^2, the transformed tile's positions (GEMMs) for r x r filters.
inline int winograd_positions(int64_t filter_size) {
  return int((filter_size + 1) * (filter_size + 1));
}

// Floats from one position's (rows, cols) plane of a chunk (v, m, the weight gradient's w) to
// the next: rows x cols rounded up to an odd number of 64-byte lines. The transforms write (or
// read) all a^2 planes at once, one row of each per run of images; at plain rows x cols these
// rows lie a multiple of 4 KB apart at the CIFAR net's and AlexNet's shapes (32 x 256 floats:
// 32 KB), so all 36 fell into one L1 set (and one store-to-load 4 KB alias) and evicted each
// other. An odd number of lines puts the a^2 <= 64 rows in distinct sets.
inline int64_t winograd_plane(int64_t rows, int64_t cols) {
  const int64_t lines = (rows * cols + 15) / 16;
  return (lines | 1) * 16;
}

namespace {

// Images at a time: a run within kZeroRow's 64 floats.
constexpr int64_t kImageRun = 64;

// The transforms' loops along the images are vectorised by `GCC ivdep` (the runs read and write
// distinct rows) with the loops over a tile's positions inside unrolled, rather than by
// `omp simd`: that one makes the small arrays the one-dimensional transforms take by pointer
// per-lane arrays in memory before inlining, and GCC 12 then left every such loop scalar.

// v (a^2, channels, cols; planes winograd_plane apart) = B^T d B for every channel and tile of
// the chunk. Channel by channel, tile by tile: the a^2 source rows (or kZeroRow outside the
// image) are found once per run of images, then the run is transformed with no index arithmetic.
template <class T>
CONVNET_BODY void transform_input(const WinogradTiles& g, int64_t tile0, int64_t ntiles,
                                  float* v) {
  constexpr int a = T::kAlpha;
  const int64_t cols = ntiles * g.images, plane = winograd_plane(g.channels, cols);
  for (int64_t c = 0; c < g.channels; ++c) {
    const float* xc = g.in + c * g.in_h * g.in_w * g.images;
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t iy0 = (tile0 + t) / g.tiles_w * 2 - g.pad;
      const int64_t ix0 = (tile0 + t) % g.tiles_w * 2 - g.pad;
      for (int64_t n0 = 0; n0 < g.images; n0 += kImageRun) {
        const int64_t len = std::min(kImageRun, g.images - n0);
        const float* s[a * a];
        for (int i = 0; i < a; ++i)
          for (int j = 0; j < a; ++j) {
            const int64_t iy = iy0 + i, ix = ix0 + j;
            const bool inside = iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w;
            s[a * i + j] = inside ? xc + (iy * g.in_w + ix) * g.images + n0 : kZeroRow;
          }
        float* d = v + c * cols + t * g.images + n0;
#pragma GCC ivdep
        for (int64_t n = 0; n < len; ++n) {
          float r[a][a];  // rows of B^T d
#pragma GCC unroll 6
          for (int j = 0; j < a; ++j) {
            float col[a], out[a];
#pragma GCC unroll 6
            for (int i = 0; i < a; ++i) col[i] = s[a * i + j][n];
            T::input(col, out);
#pragma GCC unroll 6
            for (int i = 0; i < a; ++i) r[i][j] = out[i];
          }
#pragma GCC unroll 6
          for (int i = 0; i < a; ++i) {  // (B^T d) B, row i
            float out[a];
            T::input(r[i], out);
#pragma GCC unroll 6
            for (int j = 0; j < a; ++j) d[(a * i + j) * plane + n] = out[j];
          }
        }
      }
    }
  }
}

CONVNET_BODY void winograd_input_transform_impl(const WinogradTiles& g, int64_t tile0,
                                                int64_t ntiles, float* v) {
  if (g.filter_size == 5) return transform_input<WinogradF2x5>(g, tile0, ntiles, v);
  transform_input<WinogradF2x3>(g, tile0, ntiles, v);
}

// y (filters, out_h, out_w, images) (+)= A^T m A for every filter and tile of the chunk, m
// (a^2, filters, cols; planes winograd_plane apart), then the epilogue (bias of the filter,
// ReLU) on each output as it is stored: the float operations of the direct path's GEMM store
// followed by its epilogue. Per run of images, the 2x2 outputs go to a buffer in L1 first, so
// the transform vectorises whatever part of the tile exists (odd output sizes leave half tiles
// at the far edges).
template <class T>
CONVNET_BODY void transform_output(const WinogradTiles& g, int64_t filters, int64_t tile0,
                                   int64_t ntiles, const float* m, float* y, bool accumulate,
                                   const Epilogue& epi) {
  constexpr int a = T::kAlpha;
  const int64_t cols = ntiles * g.images, plane = winograd_plane(filters, cols);
  alignas(64) float o[4][kImageRun];
  for (int64_t f = 0; f < filters; ++f) {
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t oy = (tile0 + t) / g.tiles_w * 2, ox = (tile0 + t) % g.tiles_w * 2;
      const bool right = ox + 1 < g.out_w, below = oy + 1 < g.out_h;
      float* y00 = y + ((f * g.out_h + oy) * g.out_w + ox) * g.images;
      float* const outs[4] = {y00, right ? y00 + g.images : nullptr,
                              below ? y00 + g.out_w * g.images : nullptr,
                              right && below ? y00 + (g.out_w + 1) * g.images : nullptr};
      for (int64_t n0 = 0; n0 < g.images; n0 += kImageRun) {
        const int64_t len = std::min(kImageRun, g.images - n0);
        const float* s[a * a];
        for (int xi = 0; xi < a * a; ++xi) s[xi] = m + xi * plane + f * cols + t * g.images + n0;
#pragma GCC ivdep
        for (int64_t n = 0; n < len; ++n) {
          float r[2][a];  // rows of A^T m
#pragma GCC unroll 6
          for (int j = 0; j < a; ++j) {
            float col[a], out[2];
#pragma GCC unroll 6
            for (int i = 0; i < a; ++i) col[i] = s[a * i + j][n];
            T::output(col, out);
            r[0][j] = out[0], r[1][j] = out[1];
          }
#pragma GCC unroll 6
          for (int i = 0; i < 2; ++i) {  // (A^T m) A, row i
            float out[2];
            T::output(r[i], out);
            o[2 * i][n] = out[0], o[2 * i + 1][n] = out[1];
          }
        }
        for (int q = 0; q < 4; ++q) {
          if (!outs[q]) continue;
          float* yq = outs[q] + n0;
          if (accumulate) {
#pragma omp simd
            for (int64_t n = 0; n < len; ++n) yq[n] = epi.apply(o[q][n] + yq[n], f);
          } else {
#pragma omp simd
            for (int64_t n = 0; n < len; ++n) yq[n] = epi.apply(o[q][n], f);
          }
        }
      }
    }
  }
}

CONVNET_BODY void winograd_output_transform_impl(const WinogradTiles& g, int64_t filters,
                                                 int64_t tile0, int64_t ntiles, const float* m,
                                                 float* y, bool accumulate, const Epilogue& epi) {
  if (g.filter_size == 5)
    return transform_output<WinogradF2x5>(g, filters, tile0, ntiles, m, y, accumulate, epi);
  transform_output<WinogradF2x3>(g, filters, tile0, ntiles, m, y, accumulate, epi);
}

// w (a^2, filters, cols; planes winograd_plane apart) = A dY A^T for every filter and tile of
// the chunk, dY the tile's 2x2 of dy (filters, out_h, out_w, images), zero past the far edges
// (the outputs the forward's round-up drops): the transform of the weight gradient
// (winograd_wgrad.cpp), the adjoint of the output transform above.
template <class T>
CONVNET_BODY void transform_grad(const WinogradTiles& g, const float* dy, int64_t filters,
                                 int64_t tile0, int64_t ntiles, float* w) {
  constexpr int a = T::kAlpha;
  const int64_t cols = ntiles * g.images, plane = winograd_plane(filters, cols);
  for (int64_t f = 0; f < filters; ++f) {
    const float* df = dy + f * g.out_h * g.out_w * g.images;
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t oy = (tile0 + t) / g.tiles_w * 2, ox = (tile0 + t) % g.tiles_w * 2;
      const bool right = ox + 1 < g.out_w, below = oy + 1 < g.out_h;
      const float* y00 = df + (oy * g.out_w + ox) * g.images;
      for (int64_t n0 = 0; n0 < g.images; n0 += kImageRun) {
        const int64_t len = std::min(kImageRun, g.images - n0);
        const float* s00 = y00 + n0;
        const float* s01 = right ? s00 + g.images : kZeroRow;
        const float* s10 = below ? s00 + g.out_w * g.images : kZeroRow;
        const float* s11 = right && below ? s00 + (g.out_w + 1) * g.images : kZeroRow;
        float* d = w + f * cols + t * g.images + n0;
#pragma GCC ivdep
        for (int64_t n = 0; n < len; ++n) {
          const float c0[2] = {s00[n], s10[n]}, c1[2] = {s01[n], s11[n]};  // dY's columns
          float q[a][2];  // A dY
          float q0[a], q1[a];
          T::grad(c0, q0);
          T::grad(c1, q1);
#pragma GCC unroll 6
          for (int i = 0; i < a; ++i) q[i][0] = q0[i], q[i][1] = q1[i];
#pragma GCC unroll 6
          for (int i = 0; i < a; ++i) {  // (A dY) A^T, row i
            float out[a];
            T::grad(q[i], out);
#pragma GCC unroll 6
            for (int j = 0; j < a; ++j) d[(a * i + j) * plane + n] = out[j];
          }
        }
      }
    }
  }
}

CONVNET_BODY void winograd_grad_transform_impl(const WinogradTiles& g, const float* dy,
                                               int64_t filters, int64_t tile0, int64_t ntiles,
                                               float* w) {
  if (g.filter_size == 5) return transform_grad<WinogradF2x5>(g, dy, filters, tile0, ntiles, w);
  transform_grad<WinogradF2x3>(g, dy, filters, tile0, ntiles, w);
}

}  // namespace

// The entry points of one SIMD path's build, in namespace `isa`: declared here with
// CONVNET_DECLARE_ENTRY, defined in winograd_<isa>.cpp with CONVNET_DEFINE_ENTRY (isa_variants.h).
#define CONVNET_WINOGRAD_ENTRY_POINTS(isa, ENTRY)                                             \
  namespace isa {                                                                           \
  void winograd_input_transform(const WinogradTiles& g, int64_t tile0, int64_t ntiles,      \
                                float* v)                                                   \
      ENTRY(winograd_input_transform_impl(g, tile0, ntiles, v))                             \
  void winograd_output_transform(const WinogradTiles& g, int64_t filters, int64_t tile0,    \
                                 int64_t ntiles, const float* m, float* y, bool accumulate, \
                                 const Epilogue& epi)                                       \
      ENTRY(winograd_output_transform_impl(g, filters, tile0, ntiles, m, y, accumulate, epi)) \
  void winograd_grad_transform(const WinogradTiles& g, const float* dy, int64_t filters,    \
                               int64_t tile0, int64_t ntiles, float* w)                     \
      ENTRY(winograd_grad_transform_impl(g, dy, filters, tile0, ntiles, w))                 \
  }
CONVNET_WINOGRAD_ENTRY_POINTS(avx512, CONVNET_DECLARE_ENTRY)
CONVNET_WINOGRAD_ENTRY_POINTS(avx2, CONVNET_DECLARE_ENTRY)

// The input transform on the process's SIMD path (cpu_isa()), for winograd.cpp and
// winograd_wgrad.cpp.
void winograd_input_transform_isa(const WinogradTiles& g, int64_t tile0, int64_t ntiles,
                                  float* v);

}  // namespace convnet
