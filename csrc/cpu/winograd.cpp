// Winograd F(2x2, 3x3) and F(2x2, 5x5) convolution on the CPU (winograd.h; the one-dimensional
// transforms in winograd_tiles.h, the tile transforms in winograd_kernels.h).
//
// Layouts, per group (Cg = in_ch, Fg = out_ch for the forward; swapped for the data gradient),
// with a = r + 1 the side of the transformed tile (4 or 6) and a^2 its positions xi:
//   u (a^2, out_ch, in_ch) transformed filters G g G^T, position xi first; computed on each call
//                          (the filters change every step), a small pass, straight into the
//                          micro-kernel's A panel layout (FilterPanels), so no GEMM packs them
//   v (a^2, in_ch, cols)   transformed input tiles B^T d B of one chunk of tiles, all images
//   m (a^2, out_ch, cols)  m[xi] = u[xi] v[xi]: a^2 GEMMs (out_ch x in_ch) x (in_ch x cols)
// (v's and m's planes winograd_plane apart, winograd_kernels.h)
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

// The transformed filters of every group as the GEMMs' A operands, in the micro-kernel's panel
// layout: per (group, xi) a plane of ceil(out_ch / width) panels, panel q holding rows (out
// channels) q width .. q width + width - 1 (zeros past out_ch) at every k step (in channel) i,
// element (o, i) at (o / width) width in_ch + i width + o % width. Laid out once per call by the
// filter transform, so the a^2 GEMMs of every chunk read their A panels in place instead of
// transposing the (out_ch, in_ch) blocks again per chunk: 7-10% of AlexNet's conv3 forward, one
// thread, AVX-512 (perf).
struct FilterPanels {
  int64_t out_ch, in_ch;
  int width;
  int64_t plane() const { return (out_ch + width - 1) / width * width * in_ch; }
  int64_t at(int64_t o, int64_t i) const { return o / width * width * in_ch + i * width + o % width; }
};

// One (group, xi) plane of FilterPanels as a GEMM A operand (rows = o, k = i).
struct FilterPanelsOperand final : GemmOperand {
  const float* data;
  FilterPanels layout;
  FilterPanelsOperand(const float* d, const FilterPanels& l) : data(d), layout(l) {}

  const float* panels(int64_t r0, int64_t k0, int width, int64_t* panel_stride) const override {
    if (width != layout.width) return nullptr;
    *panel_stride = int64_t(width) * layout.in_ch;
    return data + layout.at(r0, k0);  // r0 is a multiple of width: the start of a panel
  }
  // Other widths (a chunk whose GEMM picks another micro-kernel): element by element.
  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    for (int64_t q = 0; q * width < rows; ++q)
      for (int64_t t = 0; t < kc; ++t)
        for (int i = 0; i < width; ++i) {
          const int64_t o = q * width + i;
          dst[(q * kc + t) * width + i] = o < rows ? data[layout.at(r0 + o, k0 + t)] : 0.f;
        }
  }
};

// u (groups, a^2, FilterPanels) from w (Cg, r, r, F). Forward: in = channel c, out = filter f.
// Data gradient (`flipped`): in = filter f, out = channel c, the filter rotated by 180 degrees.
template <class T>
void transform_filters(const ConvParams& p, const float* w, bool flipped, const FilterPanels& l,
                       float* u) {
  constexpr int r = T::kR, a = T::kAlpha;
  using Math = typename T::FilterMath;
  const int64_t in_ch = l.in_ch, out_ch = l.out_ch, plane = l.plane();
  const int64_t fg = p.filters / p.groups, rows = int64_t(p.groups) * in_ch;
  if (out_ch % l.width) std::fill_n(u, size_t(p.groups * a * a * plane), 0.f);  // pad rows
#pragma omp parallel for schedule(static) if (rows * out_ch >= 4096)
  for (int64_t gi = 0; gi < rows; ++gi) {
    const int64_t g = gi / in_ch, i = gi % in_ch;
    float* ug = u + g * a * a * plane;
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
        for (int x = 0; x < a; ++x) ug[(a * y + x) * plane + l.at(o, i)] = float(out[x]);
      }
    }
  }
}

void transform_filters(const ConvParams& p, const float* w, bool flipped, const FilterPanels& l,
                       float* u) {
  if (p.filter_size == 5) return transform_filters<WinogradF2x5>(p, w, flipped, l, u);
  transform_filters<WinogradF2x3>(p, w, flipped, l, u);
}

void output_transform(const WinogradTiles& g, int64_t filters, int64_t tile0, int64_t ntiles,
                      const float* m, float* y, bool accumulate, const Epilogue& epi) {
  if (cpu_isa() == Isa::avx512)
    return avx512::winograd_output_transform(g, filters, tile0, ntiles, m, y, accumulate, epi);
  if (cpu_isa() == Isa::avx2)
    return avx2::winograd_output_transform(g, filters, tile0, ntiles, m, y, accumulate, epi);
  winograd_output_transform_impl(g, filters, tile0, ntiles, m, y, accumulate, epi);
}

int64_t tiles_per_chunk(const WinogradTiles& tiles) {
  return std::max<int64_t>(1, kChunkColumns / tiles.images);
}

// The panel layout of the filters for the GEMMs of a full chunk (those of a shorter last chunk
// may pick another micro-kernel; FilterPanelsOperand packs for them).
FilterPanels filter_panels(const WinogradTiles& tiles, int64_t out_ch) {
  const int64_t ntiles_all = (tiles.out_h + 1) / 2 * tiles.tiles_w;
  GemmProblem gp;
  gp.m = out_ch, gp.k = tiles.channels;
  gp.n = std::min(tiles_per_chunk(tiles), ntiles_all) * tiles.images;
  return FilterPanels{out_ch, tiles.channels, gemm_panel_rows(gp, 0)};
}

// One Winograd convolution: `tiles` describes group 0's input (group g's starts
// g * in_group_stride floats later), u the transformed filters of every group (layout `l`), out
// (groups * out_ch, out_h, out_w, images).
void winograd_run(const WinogradTiles& tiles, int64_t groups, int64_t in_group_stride,
                  const float* u, const FilterPanels& l, float* out, bool accumulate,
                  const Epilogue& epi) {
  const int64_t in_ch = tiles.channels, images = tiles.images, out_ch = l.out_ch;
  const int xis = winograd_positions(tiles.filter_size);
  const int64_t ntiles_all = (tiles.out_h + 1) / 2 * tiles.tiles_w;
  const int64_t per_chunk = tiles_per_chunk(tiles);
  const int64_t chunks = (ntiles_all + per_chunk - 1) / per_chunk;
  const int64_t out_group_stride = out_ch * tiles.out_h * tiles.out_w * images;
  const int64_t units = groups * chunks;
  const double flops = 2.0 * xis * double(in_ch) * double(out_ch) * double(ntiles_all * images);
  // Fewer units than threads: one thread runs them and the GEMMs thread themselves.
#pragma omp parallel for schedule(dynamic, 1) if (units >= 2 && flops >= 4e6)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t g = unit / chunks, tile0 = unit % chunks * per_chunk;
    const int64_t ntiles = std::min(per_chunk, ntiles_all - tile0), cols = ntiles * images;
    const int64_t vplane = winograd_plane(in_ch, cols), mplane = winograd_plane(out_ch, cols);
    thread_local AlignedScratch vbuf, mbuf;
    float* v = vbuf.get(size_t(xis * vplane));
    float* m = mbuf.get(size_t(xis * mplane));
    WinogradTiles tg = tiles;
    tg.in += g * in_group_stride;
    winograd_input_transform_isa(tg, tile0, ntiles, v);
    const float* ug = u + g * xis * l.plane();
    for (int xi = 0; xi < xis; ++xi) {
      FilterPanelsOperand a(ug + xi * l.plane(), l);  // rows = o, k = i
      ContiguousRowsOperand b(v + xi * vplane, cols);  // rows = column, k = i
      GemmProblem gp;
      gp.m = out_ch, gp.n = cols, gp.k = in_ch;
      gp.a = &a, gp.b = &b, gp.c = m + xi * mplane, gp.ldc = cols;
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
  return pass != ConvOp::conv_bwd_weights || cpu_isa() != Isa::portable;
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
  WinogradTiles tiles{x, cg, p.height, p.width, p.images, p.padding,
                      p.out_h, p.out_w, (p.out_w + 1) / 2, p.filter_size};
  const FilterPanels l = filter_panels(tiles, fg);
  thread_local AlignedScratch ubuf;  // per issuing thread (each logical CPU device has one)
  float* u = ubuf.get(size_t(winograd_positions(p.filter_size) * p.groups * l.plane()));
  transform_filters(p, w, false, l, u);
  winograd_run(tiles, p.groups, cg * p.height * p.width * int64_t(p.images), u, l, y,
               accumulate, epi);
}

void winograd_conv_bwd_data(const ConvParams& p, const float* dy, const float* w, float* dx,
                            bool accumulate) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  WinogradTiles tiles{dy, fg, p.out_h, p.out_w, p.images, p.filter_size - 1 - int64_t(p.padding),
                      p.height, p.width, (p.width + 1) / 2, p.filter_size};
  const FilterPanels l = filter_panels(tiles, cg);
  thread_local AlignedScratch ubuf;
  float* u = ubuf.get(size_t(winograd_positions(p.filter_size) * p.groups * l.plane()));
  transform_filters(p, w, true, l, u);
  winograd_run(tiles, p.groups, fg * p.out_h * p.out_w * int64_t(p.images), u, l, dx,
               accumulate, Epilogue{});
}

}  // namespace convnet
