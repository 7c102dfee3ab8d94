// The tile transforms of Winograd F(2x2, 3x3) (winograd.cpp), compiled once per SIMD path:
// winograd.cpp (baseline x86-64), winograd_avx2.cpp and winograd_avx512.cpp include this file,
// and winograd.cpp picks one at run time (csrc/cpu/isa.h). Every loop runs along the images,
// contiguous in the (C, H, W, N) layout, so one 4x4 tile of all images is 16 rows of N floats.
//
// With d a 4x4 input tile, g a 3x3 filter, Y the 2x2 output tile (Lavin & Gray, 2016):
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
//   B^T = | 1  0 -1  0 |   G = | 1    0    0   |   A^T = | 1  1  1  0 |
//         | 0  1  1  0 |       | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
//         | 0 -1  1  0 |       | 1/2 -1/2  1/2 |
//         | 0  1  0 -1 |       | 0    0    1   |
// The sum over channels of the 16 elementwise products is 16 GEMMs, one per position xi = 4i + j
// of the transformed tile; these kernels are the transforms on either side of them, and the
// weight gradient's transform of dy (A dY A^T, winograd_wgrad.cpp).
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

namespace convnet {

// The input of a Winograd convolution for one group, and the output it tiles.
struct WinogradTiles {
  const float* in;                  // (channels, in_h, in_w, images), offset to the group
  int64_t channels, in_h, in_w, images;
  int64_t pad;                      // < 0 crops (the data gradient of padding > 2)
  int64_t out_h, out_w, tiles_w;    // tiles_w = ceil(out_w / 2)
};

namespace {

// Images at a time: a run within kZeroRow's 64 floats.
constexpr int64_t kImageRun = 64;

// v (16, channels, cols) = B^T d B for every channel and tile of the chunk. Channel by channel,
// tile by tile: the 16 source rows (or kZeroRow outside the image) are found once per run of
// images, then the run is transformed with no index arithmetic.
CONVNET_BODY void winograd_input_transform_impl(const WinogradTiles& g, int64_t tile0,
                                                int64_t ntiles, float* v) {
  const int64_t cols = ntiles * g.images, plane = g.channels * cols;
  for (int64_t c = 0; c < g.channels; ++c) {
    const float* xc = g.in + c * g.in_h * g.in_w * g.images;
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t iy0 = (tile0 + t) / g.tiles_w * 2 - g.pad;
      const int64_t ix0 = (tile0 + t) % g.tiles_w * 2 - g.pad;
      for (int64_t n0 = 0; n0 < g.images; n0 += kImageRun) {
        const int64_t len = std::min(kImageRun, g.images - n0);
        const float* s[16];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) {
            const int64_t iy = iy0 + i, ix = ix0 + j;
            const bool inside = iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w;
            s[4 * i + j] = inside ? xc + (iy * g.in_w + ix) * g.images + n0 : kZeroRow;
          }
        float* d = v + c * cols + t * g.images + n0;
#pragma omp simd
        for (int64_t n = 0; n < len; ++n) {
          float r[4][4];  // rows of B^T d
          for (int j = 0; j < 4; ++j) {
            const float d0 = s[j][n], d1 = s[4 + j][n], d2 = s[8 + j][n], d3 = s[12 + j][n];
            r[0][j] = d0 - d2, r[1][j] = d1 + d2, r[2][j] = d2 - d1, r[3][j] = d1 - d3;
          }
          for (int i = 0; i < 4; ++i) {  // (B^T d) B, row i
            d[(4 * i + 0) * plane + n] = r[i][0] - r[i][2];
            d[(4 * i + 1) * plane + n] = r[i][1] + r[i][2];
            d[(4 * i + 2) * plane + n] = r[i][2] - r[i][1];
            d[(4 * i + 3) * plane + n] = r[i][1] - r[i][3];
          }
        }
      }
    }
  }
}

// y (filters, out_h, out_w, images) (+)= A^T m A for every filter and tile of the chunk, m
// (16, filters, cols), then the epilogue (bias of the filter, ReLU) on each output as it is
// stored: the float operations of the direct path's GEMM store followed by its epilogue. Per run
// of images, the 2x2 outputs go to a buffer in L1 first, so the transform vectorises whatever
// part of the tile exists (odd output sizes leave half tiles at the far edges).
CONVNET_BODY void winograd_output_transform_impl(const WinogradTiles& g, int64_t filters,
                                                 int64_t tile0, int64_t ntiles, const float* m,
                                                 float* y, bool accumulate, const Epilogue& epi) {
  const int64_t cols = ntiles * g.images, plane = filters * cols;
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
        const float* s[16];
        for (int xi = 0; xi < 16; ++xi) s[xi] = m + xi * plane + f * cols + t * g.images + n0;
#pragma omp simd
        for (int64_t n = 0; n < len; ++n) {
          float r[2][4];  // rows of A^T m
          for (int j = 0; j < 4; ++j) {
            const float m0 = s[j][n], m1 = s[4 + j][n], m2 = s[8 + j][n], m3 = s[12 + j][n];
            r[0][j] = m0 + m1 + m2, r[1][j] = m1 - m2 - m3;
          }
          o[0][n] = r[0][0] + r[0][1] + r[0][2], o[1][n] = r[0][1] - r[0][2] - r[0][3];
          o[2][n] = r[1][0] + r[1][1] + r[1][2], o[3][n] = r[1][1] - r[1][2] - r[1][3];
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

// w (16, filters, cols) = A dY A^T for every filter and tile of the chunk, dY the tile's 2x2 of
// dy (filters, out_h, out_w, images), zero past the far edges (the outputs the forward's
// round-up drops): the transform of the weight gradient (winograd_wgrad.cpp), the adjoint of
// the output transform above. With A = A^T's transpose, the rows of A dY are Y0, Y0 + Y1,
// Y0 - Y1 and -Y1 (Y0, Y1 the rows of dY), its columns combined the same way.
CONVNET_BODY void winograd_grad_transform_impl(const WinogradTiles& g, const float* dy,
                                               int64_t filters, int64_t tile0, int64_t ntiles,
                                               float* w) {
  const int64_t cols = ntiles * g.images, plane = filters * cols;
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
#pragma omp simd
        for (int64_t n = 0; n < len; ++n) {
          const float a0 = s00[n], a1 = s01[n], b0 = s10[n], b1 = s11[n];
          const float q[4][2] = {{a0, a1}, {a0 + b0, a1 + b1}, {a0 - b0, a1 - b1}, {-b0, -b1}};
          for (int i = 0; i < 4; ++i) {
            d[(4 * i + 0) * plane + n] = q[i][0];
            d[(4 * i + 1) * plane + n] = q[i][0] + q[i][1];
            d[(4 * i + 2) * plane + n] = q[i][0] - q[i][1];
            d[(4 * i + 3) * plane + n] = -q[i][1];
          }
        }
      }
    }
  }
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
