// Winograd F(2x2, 3x3) and F(2x2, 5x5) convolution on the CPU (winograd.h; the one-dimensional
// transforms in winograd_tiles.h, the tile transforms in winograd_kernels.h).
//
// Layouts, per group (Cg = in_ch, Fg = out_ch for the forward; swapped for the data gradient),
// with a = r + 1 the side of the transformed tile (4 or 6) and a^2 its positions xi:
//   u (a^2, out_ch, in_ch) transformed filters G g G^T, position xi first; computed on each call
//                          (the filters change every step), a small pass; in_ch contiguous, so
//                          the GEMM packs it by transposes (in registers on the AVX paths; with
//                          out_ch contiguous, copies of 6 floats per k step: AlexNet's
//                          conv3-conv5 forward measured 3-6% slower)
//   v (a^2, in_ch, cols)   transformed input tiles B^T d B of one chunk of tiles, all images
//   m (a^2, out_ch, cols)  m[xi] = u[xi] v[xi]: a^2 GEMMs (out_ch x in_ch) x (in_ch x cols)
// then y = A^T m A into the output tiles, with the epilogue. The GEMMs go through gemm_run (the
// micro-kernel variant 0 picks for the ISA in use); v's rows are contiguous, so its full panels
// are gathered by the micro-kernel itself.
//
// Threads: each takes (group, chunk of tiles) units from an OpenMP dynamic schedule and runs the
// whole pipeline of a unit on its own scratch: transform, a^2 single-threaded GEMMs, inverse
// transform. A chunk is kChunkColumns GEMM columns (whole tiles), so v and m of one unit stay
// near the core between the transforms and the GEMMs. Every output is computed by one thread in
// a fixed order, so the bits do not depend on which thread took which unit.
//
// Data gradient: dx = conv(dy, w') with w'[f, ky, kx, c] = w[c, r-1-ky, r-1-kx, f] and padding
// r - 1 - padding (negative: a crop), the same pipeline with the filters transformed rotated and
// transposed.
#include "winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "check.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "winograd_kernels.h"
#include "winograd_tiles.h"

namespace convnet {
namespace {

// GEMM columns per unit of work: at AlexNet's 128 images, 2 tiles, so conv3's 49 tiles make 25
// units for the threads to share, and each GEMM's (out_ch x in_ch) filter block, packed per
// call, serves 256 columns. Chunks of 64, 128 and 512 columns timed within the shared machine's
// noise of this one (BENCHMARKS.md).
constexpr int64_t kChunkColumns = 256;

// A (k, n) matrix whose k rows are contiguous, `row_stride` floats apart, as a GEMM B operand
// (rows = n, k): v[xi] of one chunk. Full panels are handed to the driver as row pointers.
struct ContiguousRowsOperand final : GemmOperand {
  const float* data;
  int64_t row_stride;
  ContiguousRowsOperand(const float* d, int64_t s) : data(d), row_stride(s) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    pack_strided(data, 1, row_stride, r0, rows, k0, kc, width, dst);
  }
  bool row_pointers(int64_t r0, int64_t k0, int64_t kc, int /*width*/,
                    const float** ptrs) const override {
    for (int64_t t = 0; t < kc; ++t) ptrs[t] = data + (k0 + t) * row_stride + r0;
    return true;
  }
};

// u (groups, a^2, out_ch, in_ch) from w (Cg, r, r, F). Forward: in = channel c, out = filter
// f. Data gradient (`flipped`): in = filter f, out = channel c, the filter rotated by 180 degrees.
template <class T>
void transform_filters(const ConvParams& p, const float* w, bool flipped, float* u) {
  constexpr int r = T::kR, a = T::kAlpha;
  using Math = typename T::FilterMath;
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  const int64_t in_ch = flipped ? fg : cg, out_ch = flipped ? cg : fg;
  const int64_t rows = int64_t(p.groups) * in_ch;
#pragma omp parallel for schedule(static) if (rows * out_ch >= 4096)
  for (int64_t gi = 0; gi < rows; ++gi) {
    const int64_t g = gi / in_ch, i = gi % in_ch;
    float* ug = u + g * a * a * in_ch * out_ch + i;
    for (int64_t o = 0; o < out_ch; ++o) {
      const int64_t c = flipped ? o : i, f = g * fg + (flipped ? i : o);
      Math k[r][r], gk[a][r];  // the filter, G k
      for (int ky = 0; ky < r; ++ky)
        for (int kx = 0; kx < r; ++kx) {
          const int sy = flipped ? r - 1 - ky : ky, sx = flipped ? r - 1 - kx : kx;
          k[ky][kx] = w[((c * r + sy) * r + sx) * p.filters + f];
        }
      for (int j = 0; j < r; ++j) {
        Math col[r], out[a];
        for (int y = 0; y < r; ++y) col[y] = k[y][j];
        T::filter(col, out);
        for (int y = 0; y < a; ++y) gk[y][j] = out[y];
      }
      for (int y = 0; y < a; ++y) {  // (G k) G^T, row y
        Math out[a];
        T::filter(gk[y], out);
        for (int x = 0; x < a; ++x) ug[(a * y + x) * in_ch * out_ch + o * in_ch] = float(out[x]);
      }
    }
  }
}

void transform_filters(const ConvParams& p, const float* w, bool flipped, float* u) {
  if (p.filter_size == 5) return transform_filters<WinogradF2x5>(p, w, flipped, u);
  transform_filters<WinogradF2x3>(p, w, flipped, u);
}

void output_transform(const WinogradTiles& g, int64_t filters, int64_t tile0, int64_t ntiles,
                      const float* m, float* y, bool accumulate, const Epilogue& epi) {
  if (cpu_isa() == Isa::avx512)
    return avx512::winograd_output_transform(g, filters, tile0, ntiles, m, y, accumulate, epi);
  if (cpu_isa() == Isa::avx2)
    return avx2::winograd_output_transform(g, filters, tile0, ntiles, m, y, accumulate, epi);
  winograd_output_transform_impl(g, filters, tile0, ntiles, m, y, accumulate, epi);
}

// One Winograd convolution: `tiles` describes group 0's input (group g's starts
// g * in_group_stride floats later), u the transformed filters of every group, out (groups *
// out_ch, out_h, out_w, images).
void winograd_run(const WinogradTiles& tiles, int64_t groups, int64_t in_group_stride,
                  const float* u, int64_t out_ch, float* out, bool accumulate,
                  const Epilogue& epi) {
  const int64_t in_ch = tiles.channels, images = tiles.images;
  const int xis = winograd_positions(tiles.filter_size);
  const int64_t ntiles_all = (tiles.out_h + 1) / 2 * tiles.tiles_w;
  const int64_t per_chunk = std::max<int64_t>(1, kChunkColumns / images);
  const int64_t chunks = (ntiles_all + per_chunk - 1) / per_chunk;
  const int64_t out_group_stride = out_ch * tiles.out_h * tiles.out_w * images;
  const int64_t units = groups * chunks;
  const double flops = 2.0 * xis * double(in_ch) * double(out_ch) * double(ntiles_all * images);
  // Fewer units than threads: one thread runs them and the GEMMs thread themselves.
#pragma omp parallel for schedule(dynamic, 1) if (units >= 2 && flops >= 4e6)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t g = unit / chunks, tile0 = unit % chunks * per_chunk;
    const int64_t ntiles = std::min(per_chunk, ntiles_all - tile0), cols = ntiles * images;
    thread_local AlignedScratch vbuf, mbuf;
    float* v = vbuf.get(size_t(xis * in_ch * cols));
    float* m = mbuf.get(size_t(xis * out_ch * cols));
    WinogradTiles tg = tiles;
    tg.in += g * in_group_stride;
    winograd_input_transform_isa(tg, tile0, ntiles, v);
    const float* ug = u + g * xis * in_ch * out_ch;
    for (int xi = 0; xi < xis; ++xi) {
      StridedOperand a(ug + xi * in_ch * out_ch, in_ch, 1);  // rows = o, k = i
      ContiguousRowsOperand b(v + xi * in_ch * cols, cols);   // rows = column, k = i
      GemmProblem gp;
      gp.m = out_ch, gp.n = cols, gp.k = in_ch;
      gp.a = &a, gp.b = &b, gp.c = m + xi * out_ch * cols, gp.ldc = cols;
      gemm_run(gp, 0);
    }
    output_transform(tg, out_ch, tile0, ntiles, m, out + g * out_group_stride, accumulate,
                     epi.from_row(g * out_ch));
  }
}

}  // namespace

void winograd_input_transform_isa(const WinogradTiles& g, int64_t tile0, int64_t ntiles,
                                  float* v) {
  if (cpu_isa() == Isa::avx512) return avx512::winograd_input_transform(g, tile0, ntiles, v);
  if (cpu_isa() == Isa::avx2) return avx2::winograd_input_transform(g, tile0, ntiles, v);
  winograd_input_transform_impl(g, tile0, ntiles, v);
}

bool winograd_pays(ConvOp pass, const ConvParams& p) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  if (p.filter_size == 3) return cg >= kWinogradMinChannels && fg >= kWinogradMinChannels;
  if (cg < kWinograd5MinChannels || fg < kWinograd5MinChannels) return false;
  return pass != ConvOp::conv_bwd_weights || cpu_isa() == Isa::avx512;
}

const char* winograd_setting(const char* op) {
  const char* env = std::getenv("CONVNET_WINOGRAD");
  if (!env || !*env) return "auto";
  for (const char* setting : {"auto", "on", "off"})
    if (!std::strcmp(env, setting)) return setting;
  CONVNET_CHECK(false, op << ": CONVNET_WINOGRAD must be auto, on or off, got '" << env << "'");
}

bool conv_uses_winograd(ConvOp pass, const ConvParams& p) {
  const bool wgrad = pass == ConvOp::conv_bwd_weights;
  const char* op = wgrad ? "conv_bwd_weights"
                         : pass == ConvOp::conv_bwd_data ? "conv_bwd_data" : "conv_fwd";
  const int forcing = wgrad ? kWinogradWgradVariant : kWinogradVariant;
  const bool applies = (p.filter_size == 3 || p.filter_size == 5) && p.stride == 1;
  if (p.variant == forcing) {
    CONVNET_CHECK(applies, op << ": variant " << forcing
                              << " (Winograd F(2x2,3x3) or F(2x2,5x5)) needs 3x3 or 5x5 filters"
                                 " and stride 1, got "
                              << p.filter_size << "x" << p.filter_size << " stride " << p.stride);
    return true;
  }
  if (p.variant != 0 || !applies) return false;
  const char* setting = winograd_setting(op);
  if (!std::strcmp(setting, "auto")) return winograd_pays(pass, p);
  return !std::strcmp(setting, "on");
}

void winograd_conv_fwd(const ConvParams& p, const float* x, const float* w, float* y,
                       bool accumulate, const Epilogue& epi) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  thread_local AlignedScratch ubuf;  // per issuing thread (each logical CPU device has one)
  float* u = ubuf.get(size_t(winograd_positions(p.filter_size) * cg * p.filters));
  transform_filters(p, w, false, u);
  WinogradTiles tiles{x, cg, p.height, p.width, p.images, p.padding,
                      p.out_h, p.out_w, (p.out_w + 1) / 2, p.filter_size};
  winograd_run(tiles, p.groups, cg * p.height * p.width * int64_t(p.images), u, fg, y,
               accumulate, epi);
}

void winograd_conv_bwd_data(const ConvParams& p, const float* dy, const float* w, float* dx,
                            bool accumulate) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  thread_local AlignedScratch ubuf;
  float* u = ubuf.get(size_t(winograd_positions(p.filter_size) * cg * p.filters));
  transform_filters(p, w, true, u);
  WinogradTiles tiles{dy, fg, p.out_h, p.out_w, p.images, p.filter_size - 1 - int64_t(p.padding),
                      p.height, p.width, (p.width + 1) / 2, p.filter_size};
  winograd_run(tiles, p.groups, fg * p.out_h * p.out_w * int64_t(p.images), u, cg, dx,
               accumulate, Epilogue{});
}

}  // namespace convnet
