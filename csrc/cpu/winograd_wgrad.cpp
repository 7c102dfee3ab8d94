// The weight gradient of a 3x3 or 5x5 stride-1 convolution by Winograd F(2x2, 3x3) or
// F(2x2, 5x5) (winograd.h; conv_bwd_weights variant kWinogradWgradVariant; the tile transforms
// in winograd_kernels.h, their one-dimensional forms in winograd_tiles.h).
//
// The forward computes each 2x2 output tile as Y = A^T [U (.) V] A, U = G g G^T the transformed
// filter, V = B^T d B the transformed input tile: exactly the convolution. Differentiating that
// identity, with dY the tile's 2x2 of dy (zero past the far edges, where the forward's round-up
// computes outputs nobody keeps):
//   dU = sum over the tiles and images of V (.) (A dY A^T),   dg = G^T dU G
// Per group, with in_ch = Cg, out_ch = Fg, a^2 the transformed tile's positions (16 or 36) and a
// chunk of tiles giving cols = tiles x images:
//   v  (a^2, in_ch, cols)    B^T d B (winograd.cpp's input transform)
//   w  (a^2, out_ch, cols)   A dY A^T
//   du (a^2, in_ch, out_ch)  du[xi] += v[xi] w[xi]^T: a^2 GEMMs with k = the chunk's columns
//                            (on the AVX-512 path up to 64 filters, dot products:
//                            winograd_dots.h)
// (v's and w's planes winograd_plane apart, winograd_kernels.h)
// then dw[c, ky, kx, f] (+)= (G^T du[.][c][f] G)[ky][kx]. The GEMMs do a^2 Cg Fg tiles N
// multiply-adds where the direct paths do r^2 Cg Fg Ho Wo N: for 3x3, 1.94x fewer at AlexNet's
// 13x13 (49 tiles for 169 outputs), 2.25x for even sizes; for 5x5, 2.58x at conv2's 27x27 (196
// tiles for 729 outputs), 2.78x for even sizes.
//
// Threads: each group's tiles are cut into chunks of about kWgradChunkColumns GEMM columns; each
// thread takes a fixed contiguous share of the (group, chunk) units (a share of the reduction),
// transforms one chunk at a time into its own scratch and accumulates its a^2 single-threaded
// GEMMs into a private du per group. The privates are summed in thread order by the inverse
// transform, so the bits depend on the thread count only, never on timing.
#include <omp.h>

#include <algorithm>

#include "gemm_cpu.h"
#include "isa.h"
#include "winograd.h"
#include "winograd_dots.h"
#include "winograd_kernels.h"
#include "winograd_tiles.h"

namespace convnet {
namespace {

// GEMM columns (the k of the a^2 GEMMs) per chunk: at 128 images, 2 tiles. Each chunk reads and
// writes every private du once (a^2 Cg Fg floats, 6 MB at conv3), so longer chunks cut that
// traffic, but v and w of a chunk (a^2 (Cg + Fg) floats per column) then spill further from L2
// before the GEMMs pack them: one thread, AVX-512, AlexNet's conv3 and conv5 ran equally fast at
// 128 and 256 columns, 4-30% slower at 512 to 2048.
constexpr int64_t kWgradChunkColumns = 256;

// Filters per group up to which the AVX-512 path takes the dot products.
constexpr int64_t kWinogradDotsMaxFilters = 64;

void grad_transform(const WinogradTiles& g, const float* dy, int64_t filters, int64_t tile0,
                    int64_t ntiles, float* w) {
  if (cpu_isa() == Isa::avx512)
    return avx512::winograd_grad_transform(g, dy, filters, tile0, ntiles, w);
  if (cpu_isa() == Isa::avx2)
    return avx2::winograd_grad_transform(g, dy, filters, tile0, ntiles, w);
  winograd_grad_transform_impl(g, dy, filters, tile0, ntiles, w);
}

// dw rows (c, ky, kx) of filters [0, out_ch) at stride `ld` (+)= G^T du G, du the sum of the
// `parts` private (a^2, in_ch, out_ch) sums `part` floats apart, added in order; channels
// [c0, c1). `sum` is scratch of a^2 x out_ch floats.
template <class T>
void inverse_filter_transform(const float* du, int parts, size_t part, int64_t in_ch,
                              int64_t out_ch, int64_t c0, int64_t c1, float* dw, int64_t ld,
                              bool accumulate, float* sum) {
  constexpr int r = T::kR, a = T::kAlpha;
  const int64_t plane = in_ch * out_ch;
  for (int64_t c = c0; c < c1; ++c) {
    for (int xi = 0; xi < a * a; ++xi) {
      const float* s = du + xi * plane + c * out_ch;
      float* d = sum + xi * out_ch;
      std::copy_n(s, out_ch, d);
      for (int u = 1; u < parts; ++u) {
        const float* su = s + part * u;
#pragma omp simd
        for (int64_t f = 0; f < out_ch; ++f) d[f] += su[f];
      }
    }
    float* dc = dw + c * r * r * ld;
#pragma omp simd
    for (int64_t f = 0; f < out_ch; ++f) {
      float h[r][a];  // G^T du, column j
      for (int j = 0; j < a; ++j) {
        float col[a], out[r];
        for (int i = 0; i < a; ++i) col[i] = sum[(a * i + j) * out_ch + f];
        T::filter_grad(col, out);
        for (int y = 0; y < r; ++y) h[y][j] = out[y];
      }
      for (int y = 0; y < r; ++y) {  // (G^T du) G, row y
        float g[r];
        T::filter_grad(h[y], g);
        float* row = dc + y * r * ld + f;
        for (int x = 0; x < r; ++x) row[x * ld] = accumulate ? row[x * ld] + g[x] : g[x];
      }
    }
  }
}

}  // namespace

void winograd_conv_bwd_weights(const ConvParams& p, const float* x, const float* dy, float* dw,
                               bool accumulate) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups, groups = p.groups;
  const int64_t images = p.images;
  const int64_t in_group = cg * p.height * p.width * images;
  const int64_t out_group = fg * p.out_h * p.out_w * images;
  const WinogradTiles tiles{x, cg, p.height, p.width, images, p.padding,
                            p.out_h, p.out_w, (p.out_w + 1) / 2, p.filter_size};
  const int xis = winograd_positions(p.filter_size);
  const int64_t ntiles_all = (tiles.out_h + 1) / 2 * tiles.tiles_w;
  const int64_t per_chunk = std::max<int64_t>(1, kWgradChunkColumns / images);
  const int64_t chunks = (ntiles_all + per_chunk - 1) / per_chunk, units = groups * chunks;
  const double flops =
      2.0 * xis * double(groups * cg) * double(fg) * double(ntiles_all * images);
  const int threads = flops < 4e6 ? 1 : int(std::min<int64_t>(omp_get_max_threads(), units));
  // Private sums (thread, group, a^2, cg, fg): per issuing thread (each logical CPU device issues
  // from its own), grow-only.
  const size_t part = size_t(xis * cg * fg), per_thread = part * size_t(groups);
  // The AVX-512 dot products (winograd_dots.h) where they beat the GEMMs: one thread, Zen 4,
  // alternating builds, CIFAR's conv2 / conv3 (32 -> 32, 32 -> 64 channels) 1.2-1.4x as fast;
  // AlexNet's conv2 (48 -> 128 per group) 0.8x and conv3 (256 -> 384) 0.73x, where the GEMMs'
  // packing is a smaller share (it scales with 1/Cg + 1/Fg) and their cache blocking counts.
  // By the filters alone: each channel's sums are the same bits either way it is computed, so a
  // layer's inputs stacked along the channels (ConvLayer) get the bits of their own calls.
  const bool dots = cpu_isa() == Isa::avx512 && fg <= kWinogradDotsMaxFilters;
  // Elsewhere the GEMMs' micro-kernel: on the AVX-512 path 14x32 (variant 3), whose 14-row A
  // panels use 14 of the 16 rows of each in-register transpose that packs v (6x64's 6-row panels
  // use 6), and whose k block holds a chunk's 256 columns whole (C written once, not twice).
  const int gemm_variant = cpu_isa() == Isa::avx512 ? 3 : 0;
  thread_local AlignedScratch partial_buf;
  float* partials = partial_buf.get(per_thread * threads);
#pragma omp parallel num_threads(threads)
  {
    // A fixed contiguous share of the (group, chunk) units: with two groups and two threads,
    // one group each, with no second team started and no chunk left over at a group's end.
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t u0 = units * t / nt, u1 = units * (t + 1) / nt;
    float* mine = partials + per_thread * t;
    for (int64_t g = 0; g < groups; ++g)  // groups out of this share add zeros below
      if (g < u0 / chunks || g > (u1 - 1) / chunks) std::fill_n(mine + g * part, part, 0.f);
    thread_local AlignedScratch vbuf, wbuf, sumbuf;  // per team thread
    for (int64_t unit = u0; unit < u1; ++unit) {
      const int64_t g = unit / chunks, q = unit % chunks;
      const int64_t tile0 = q * per_chunk, ntiles = std::min(per_chunk, ntiles_all - tile0);
      const int64_t cols = ntiles * images;
      const int64_t vplane = winograd_plane(cg, cols), wplane = winograd_plane(fg, cols);
      float* v = vbuf.get(size_t(xis * vplane));
      float* w = wbuf.get(size_t(xis * wplane));
      WinogradTiles tg = tiles;
      tg.in += g * in_group;
      winograd_input_transform_isa(tg, tile0, ntiles, v);
      grad_transform(tg, dy + g * out_group, fg, tile0, ntiles, w);
      const bool first = unit == u0 || q == 0;  // the share's first chunk of the group
      float* du = mine + g * part;
      if (dots) {
        avx512::winograd_dots(xis, v, vplane, cols, w, wplane, cols, cg, fg, cols, du, cg * fg,
                              !first);
        continue;
      }
      for (int xi = 0; xi < xis; ++xi) {
        StridedOperand a(v + xi * vplane, cols, 1);  // rows = channel, k = column
        StridedOperand b(w + xi * wplane, cols, 1);  // rows = filter, k = column
        GemmProblem gp;
        gp.m = cg, gp.n = fg, gp.k = cols;
        gp.a = &a, gp.b = &b, gp.c = du + xi * cg * fg, gp.ldc = fg;
        gp.beta = first ? 0.f : 1.f;
        gemm_run(gp, gemm_variant);
      }
    }
#pragma omp barrier
    // dw rows (group, channel) split between the threads.
    float* sum = sumbuf.get(size_t(xis * fg));
    const int64_t rows = groups * cg, r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t g = r / cg, c = r % cg;
      if (p.filter_size == 5)
        inverse_filter_transform<WinogradF2x5>(partials + g * part, nt, per_thread, cg, fg, c,
                                               c + 1, dw + g * fg, p.filters, accumulate, sum);
      else
        inverse_filter_transform<WinogradF2x3>(partials + g * part, nt, per_thread, cg, fg, c,
                                               c + 1, dw + g * fg, p.filters, accumulate, sum);
    }
  }
}

}  // namespace convnet
