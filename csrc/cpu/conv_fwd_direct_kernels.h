// The direct convolution forward (conv_fwd variant 6, conv.cpp), compiled once per SIMD path:
// conv_fwd_direct.cpp (baseline x86-64), conv_fwd_direct_avx2.cpp and conv_fwd_direct_avx512.cpp
// include this file, and conv_fwd_direct.cpp picks one at run time (csrc/cpu/isa.h).
//
//   y[f, oy, ox, n] = sum over taps (c, ky, kx) of w[c, ky, kx, f] x[c, oy*s - pad + ky, ...,  n]
//
// Why not the implicit GEMM: with few filters (m = 32 or 64 in the CIFAR net) each B panel the
// GEMM gathers from the image rows (KC taps x 64 columns) feeds only m/6 register tiles, and C is
// read and written again at every k block; here a register tile of MR filters x NR images sums
// the whole reduction of one output position, reading the image rows where they lie (NV vector
// loads per tap) and broadcasting the filters from a packed copy (taps x MR per block of MR
// filters, made once per call), then stores its outputs once, with the epilogue applied in
// registers. Taps outside the image are skipped (their products are zeros), so a position near the
// border sums fewer taps.
//
// Order of additions: each output is one tile's sum over its in-image taps in (c, ky, kx) order,
// plus y when accumulating, plus the bias: the same bits whatever the thread count or timing.
// Images past the last whole NR columns (a batch that is not a multiple of NR) take a scalar loop
// with the same order.
//
// Tiles: MR = 6 filters, NR = 4 x 16 images with AVX-512 (24 accumulators), 2 vectors of 8 with
// AVX2 and 2 of 4 on the baseline SSE path (12 accumulators in 16 registers); the last block of
// filters runs a tile of just its rows.
#pragma once
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "cache_info.h"
#include "conv.h"
#include "conv_window_prefetch.h"
#include "epilogue.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "simd_width.h"

namespace convnet {
namespace {

// The tile: 6 filters x kFwdVectors registers of images, 4 with AVX-512's 32 registers (24
// accumulators), 2 with 16 (12).
constexpr int kFwdVectors = kSimdFloats == 16 ? 4 : 2;
constexpr int kFwdRows = 6, kFwdCols = kSimdFloats * kFwdVectors;
typedef float FVec __attribute__((vector_size(kSimdFloats * 4)));

inline FVec load_fvec(const float* p) {
  FVec v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store_fvec(float* p, FVec v) { __builtin_memcpy(p, &v, sizeof v); }
// A non-temporal store (p aligned to the vector): the line goes to memory without first being
// read for ownership.
inline void stream_fvec(float* p, FVec v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, reinterpret_cast<__m512>(v));
#elif defined(__AVX2__)
  _mm256_stream_ps(p, reinterpret_cast<__m256>(v));
#else
  _mm_stream_ps(p, reinterpret_cast<__m128>(v));
#endif
}

// What a tile needs of its output position: the in-image window [ky0, ky1) x [kx0, kx1) and the
// offset of image pixel (c = 0, ky0, kx0).
struct FwdWindow {
  int ky0, ky1, kx0, kx1;
  int64_t x0;
};

// ROWS filters x kFwdCols images at one position: packed w (taps, kFwdRows), x at its first image.
template <int ROWS>
void fwd_tile(const FwdWindow& win, int64_t cg, int fs, int64_t plane, int64_t row, int64_t N,
              const float* wp, const float* x, float* y, int64_t ldy, bool accumulate,
              bool stream, const Epilogue& epi, int64_t f0) {
  FVec acc[ROWS][kFwdVectors];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kFwdVectors; ++v) acc[r][v] = FVec{} ;
  const int kw = win.kx1 - win.kx0;
  for (int64_t c = 0; c < cg; ++c)
    for (int ky = win.ky0; ky < win.ky1; ++ky) {
      const float* xr = x + c * plane + win.x0 + (ky - win.ky0) * row;
      const float* wr = wp + ((c * fs + ky) * fs + win.kx0) * kFwdRows;
      for (int t = 0; t < kw; ++t, xr += N, wr += kFwdRows) {
        FVec b[kFwdVectors];
#pragma GCC unroll 4
        for (int v = 0; v < kFwdVectors; ++v) b[v] = load_fvec(xr + v * kSimdFloats);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
          const float a = wr[r];
#pragma GCC unroll 4
          for (int v = 0; v < kFwdVectors; ++v) acc[r][v] += b[v] * a;
        }
      }
    }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    float* yr = y + r * ldy;
    const float bias = epi.bias ? epi.bias[f0 + r] : 0.f;
#pragma GCC unroll 4
    for (int v = 0; v < kFwdVectors; ++v) {
      FVec s = acc[r][v];
      if (accumulate) s = load_fvec(yr + v * kSimdFloats) + s;
      if (epi.bias) s += bias;
      if (epi.relu) s = s > 0.f ? s : FVec{};
      if (stream)
        stream_fvec(yr + v * kSimdFloats, s);
      else
        store_fvec(yr + v * kSimdFloats, s);
    }
  }
}

template <int... R>
void fwd_tile_rows(int rows, const FwdWindow& win, int64_t cg, int fs, int64_t plane, int64_t row,
                   int64_t N, const float* wp, const float* x, float* y, int64_t ldy,
                   bool accumulate, bool stream, const Epilogue& epi, int64_t f0,
                   std::integer_sequence<int, R...>) {
  using Fn = void (*)(const FwdWindow&, int64_t, int, int64_t, int64_t, int64_t, const float*,
                      const float*, float*, int64_t, bool, bool, const Epilogue&, int64_t);
  static constexpr Fn table[] = {&fwd_tile<R + 1>...};
  table[rows - 1](win, cg, fs, plane, row, N, wp, x, y, ldy, accumulate, stream, epi, f0);
}

// One group's direct convolution: y (m, out_h, out_w, N) [+]= conv(x (cin, H, W, N)), where
// pack(b, t, r) is the weight of output row b * kFwdRows + r (< m) at input tap t = (c, ky, kx).
struct DirectConv {
  int64_t cin, m, H, W, N, out_h, out_w;
  int fs, padding, stride;
};

template <class Pack>
void direct_conv_group(const DirectConv& d, Pack&& pack, const float* x, float* y,
                       bool accumulate, const Epilogue& epi) {
  const int64_t N = d.N, W = d.W, H = d.H, row = W * N, plane = H * row;
  const int fs = d.fs;
  const int64_t taps = d.cin * fs * fs, blocks = (d.m + kFwdRows - 1) / kFwdRows;
  const int64_t positions = d.out_h * d.out_w, ldy = positions * N;
  const int64_t full = N / kFwdCols * kFwdCols;
  // Per issuing thread (two logical CPU devices issue from two threads), grow-only.
  thread_local AlignedScratch packed;
  float* wp = packed.get(size_t(blocks * taps * kFwdRows));
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t t = 0; t < taps; ++t)
      for (int r = 0; r < kFwdRows; ++r) wp[(b * taps + t) * kFwdRows + r] = pack(b, t, r);
  const double flops = 2.0 * double(d.m) * double(taps) * double(ldy);
  const int threads = flops < 4e6 ? 1 : int(std::min<int64_t>(omp_get_max_threads(), positions));
  // An output larger than L2 reaches at least L3 before its reader reads it, so its tiles are
  // streamed to memory: plain stores would first read each line for ownership. On AMD Zen 4
  // (1 MB L2) that read cost conv1 of the CIFAR net (16 MB of output) a fifth of its time, and
  // the pooling that reads the output back from memory, not L3, lost 4%. Whole vectors only, so
  // y and N must keep them aligned (convnet's host tensors are 64-byte aligned).
  const bool stream = !accumulate && double(d.m) * double(ldy) * 4 > double(cache_sizes().l2) &&
                      reinterpret_cast<uintptr_t>(y) % sizeof(FVec) == 0 &&
                      N % kSimdFloats == 0;
  // The next position's new image columns, a share before each tile, where that pays.
  const int64_t shares =
      image_rows_outgrow_l2(d.stride, d.cin, fs, row) ? full / kFwdCols * blocks : 0;
#pragma omp parallel num_threads(threads)
  {
    // Positions from a shared counter (dynamic): every output is one tile's sum whichever thread
    // takes it, so the bits do not depend on the schedule.
#pragma omp for schedule(dynamic, 4) nowait
    for (int64_t pos = 0; pos < positions; ++pos) {
      const ConvWindow cw = conv_window(pos, d.out_w, d.stride, d.padding, fs, H, W);
      FwdWindow win;
      win.ky0 = int(cw.ky0), win.ky1 = int(cw.ky1), win.kx0 = int(cw.kx0), win.kx1 = int(cw.kx1);
      win.x0 = ((cw.iy0 + cw.ky0) * W + cw.ix0 + cw.kx0) * N;
      NewColumns next;
      if (shares > 0 && pos + 1 < positions)
        next = NewColumns(x, d.cin, H, W, N, fs, d.stride,
                          conv_window(pos + 1, d.out_w, d.stride, d.padding, fs, H, W), shares);
      float* yp = y + pos * N;
      for (int64_t n0 = 0; n0 < full; n0 += kFwdCols)
        for (int64_t b = 0; b < blocks; ++b) {
          next.prefetch_share();
          const int rows = int(std::min<int64_t>(kFwdRows, d.m - b * kFwdRows));
          fwd_tile_rows(rows, win, d.cin, fs, plane, row, N, wp + b * taps * kFwdRows, x + n0,
                        yp + b * kFwdRows * ldy + n0, ldy, accumulate, stream, epi, b * kFwdRows,
                        std::make_integer_sequence<int, kFwdRows>());
        }
      // Images past the whole tiles: the same sums one output at a time.
      for (int64_t n = full; n < N; ++n)
        for (int64_t f = 0; f < d.m; ++f) {
          const float* wf = wp + (f / kFwdRows) * taps * kFwdRows + f % kFwdRows;
          float s = 0.f;
          for (int64_t c = 0; c < d.cin; ++c)
            for (int ky = win.ky0; ky < win.ky1; ++ky)
              for (int kx = win.kx0; kx < win.kx1; ++kx)
                s += wf[((c * fs + ky) * fs + kx) * kFwdRows] *
                     x[c * plane + win.x0 + ((ky - win.ky0) * W + kx - win.kx0) * N + n];
          float* yo = yp + f * ldy + n;
          if (accumulate) s = *yo + s;
          *yo = epi.apply(s, f);
        }
    }
    // The streamed lines are visible to other threads before the region's closing barrier.
    if (stream) _mm_sfence();
  }
}

void conv_fwd_direct_impl(const ConvParams& p, const float* x, const float* w, float* y,
                          bool accumulate, const Epilogue& epi) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  const DirectConv d{cg, fg, p.height, p.width, p.images, p.out_h, p.out_w,
                     p.filter_size, p.padding, p.stride};
  const int64_t in_plane = d.H * d.W * d.N, out_plane = d.out_h * d.out_w * d.N;
  for (int g = 0; g < p.groups; ++g) {
    const float* wg = w + g * fg;
    auto pack = [&](int64_t b, int64_t t, int r) {
      const int64_t f = b * kFwdRows + r;
      return f < fg ? wg[t * p.filters + f] : 0.f;
    };
    direct_conv_group(d, pack, x + g * cg * in_plane, y + g * fg * out_plane, accumulate,
                      epi.from_row(g * fg));
  }
}

// Stride 1: the data gradient is the convolution of dy (Fg, Ho, Wo, N) with the filters rotated
// by 180 degrees and transposed (channel c's weight at tap (f, ky, kx) is w[c, fs-1-ky, fs-1-kx,
// f]), padding fs-1-padding: the same kernel, its output exactly (Cg, H, W, N).
void conv_bwd_data_direct_impl(const ConvParams& p, const float* dy, const float* w, float* dx,
                               bool accumulate) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  const int fs = p.filter_size;
  const DirectConv d{fg, cg, p.out_h, p.out_w, p.images, p.height, p.width,
                     fs, fs - 1 - p.padding, 1};
  const int64_t in_plane = d.H * d.W * d.N, out_plane = d.out_h * d.out_w * d.N;
  for (int g = 0; g < p.groups; ++g) {
    const float* wg = w + g * fg;
    auto pack = [&](int64_t b, int64_t t, int r) {
      const int64_t c = b * kFwdRows + r, f = t / (fs * fs), ky = (t / fs) % fs, kx = t % fs;
      return c < cg ? wg[((c * fs + fs - 1 - ky) * fs + fs - 1 - kx) * p.filters + f] : 0.f;
    };
    direct_conv_group(d, pack, dy + g * fg * in_plane, dx + g * cg * out_plane, accumulate,
                      Epilogue{});
  }
}

}  // namespace

#define CONVNET_FWD_DIRECT_ENTRY_POINTS(isa, ENTRY)                                           \
  namespace isa {                                                                          \
  void conv_fwd_direct(const ConvParams& p, const float* x, const float* w, float* y,       \
                       bool accumulate, const Epilogue& epi)                               \
      ENTRY(conv_fwd_direct_impl(p, x, w, y, accumulate, epi))                             \
  void conv_bwd_data_direct(const ConvParams& p, const float* dy, const float* w, float* dx, \
                            bool accumulate)                                               \
      ENTRY(conv_bwd_data_direct_impl(p, dy, w, dx, accumulate))                           \
  }

CONVNET_FWD_DIRECT_ENTRY_POINTS(avx512, CONVNET_DECLARE_ENTRY)
CONVNET_FWD_DIRECT_ENTRY_POINTS(avx2, CONVNET_DECLARE_ENTRY)

}  // namespace convnet
