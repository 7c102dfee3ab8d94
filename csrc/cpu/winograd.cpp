// Winograd F(2x2, 3x3) convolution on the CPU (winograd.h; the transforms in winograd_kernels.h).
//
// Layouts, per group (Cg = in_ch, Fg = out_ch for the forward; swapped for the data gradient):
//   u (16, out_ch, in_ch)  transformed filters G g G^T, position xi of the 4x4 transform first;
//                          computed on each call (the filters change every step), a small pass;
//                          in_ch contiguous, so the GEMM packs it by transposes (in registers
//                          on the AVX paths; with out_ch contiguous, copies of 6 floats per k
//                          step: AlexNet's conv3-conv5 forward measured 3-6% slower)
//   v (16, in_ch, cols)    transformed input tiles B^T d B of one chunk of tiles, all images
//   m (16, out_ch, cols)   m[xi] = u[xi] v[xi]: 16 GEMMs (out_ch x in_ch) x (in_ch x cols)
// then y = A^T m A into the output tiles, with the epilogue. The GEMMs go through gemm_run (the
// micro-kernel variant 0 picks for the ISA in use); v's rows are contiguous, so its full panels
// are gathered by the micro-kernel itself.
//
// Threads: each takes (group, chunk of tiles) units from an OpenMP dynamic schedule and runs the
// whole pipeline of a unit on its own scratch: transform, 16 single-threaded GEMMs, inverse
// transform. A chunk is kChunkColumns GEMM columns (whole tiles), so v and m of one unit stay in
// L2 between the transforms and the GEMMs. Every output is computed by one thread in a fixed
// order, so the bits do not depend on which thread took which unit.
//
// Data gradient: dx = conv(dy, w') with w'[f, ky, kx, c] = w[c, 2 - ky, 2 - kx, f] and padding
// 2 - padding (negative: a crop), the same pipeline with the filters transformed rotated and
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

// u[xi] for one 3x3 filter k: G k G^T, row-major over the 4x4 positions.
inline void transform_filter(const float k[3][3], float u[16]) {
  float gk[4][3];  // G k
  for (int j = 0; j < 3; ++j) {
    gk[0][j] = k[0][j];
    gk[1][j] = (k[0][j] + k[1][j] + k[2][j]) * 0.5f;
    gk[2][j] = (k[0][j] - k[1][j] + k[2][j]) * 0.5f;
    gk[3][j] = k[2][j];
  }
  for (int i = 0; i < 4; ++i) {  // (G k) G^T, row i
    u[4 * i + 0] = gk[i][0];
    u[4 * i + 1] = (gk[i][0] + gk[i][1] + gk[i][2]) * 0.5f;
    u[4 * i + 2] = (gk[i][0] - gk[i][1] + gk[i][2]) * 0.5f;
    u[4 * i + 3] = gk[i][2];
  }
}

// u (groups, 16, out_ch, in_ch) from w (Cg, 3, 3, F). Forward: in = channel c, out = filter f.
// Data gradient (`flipped`): in = filter f, out = channel c, the filter rotated by 180 degrees.
void transform_filters(const ConvParams& p, const float* w, bool flipped, float* u) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  const int64_t in_ch = flipped ? fg : cg, out_ch = flipped ? cg : fg;
  const int64_t rows = int64_t(p.groups) * in_ch;
#pragma omp parallel for schedule(static) if (rows * out_ch >= 4096)
  for (int64_t gi = 0; gi < rows; ++gi) {
    const int64_t g = gi / in_ch, i = gi % in_ch;
    float* ug = u + g * 16 * in_ch * out_ch + i;
    for (int64_t o = 0; o < out_ch; ++o) {
      const int64_t c = flipped ? o : i, f = g * fg + (flipped ? i : o);
      float k[3][3], t[16];
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
          const int sy = flipped ? 2 - ky : ky, sx = flipped ? 2 - kx : kx;
          k[ky][kx] = w[((c * 3 + sy) * 3 + sx) * p.filters + f];
        }
      transform_filter(k, t);
      for (int xi = 0; xi < 16; ++xi) ug[xi * in_ch * out_ch + o * in_ch] = t[xi];
    }
  }
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
  const int64_t ntiles_all = (tiles.out_h + 1) / 2 * tiles.tiles_w;
  const int64_t per_chunk = std::max<int64_t>(1, kChunkColumns / images);
  const int64_t chunks = (ntiles_all + per_chunk - 1) / per_chunk;
  const int64_t out_group_stride = out_ch * tiles.out_h * tiles.out_w * images;
  const int64_t units = groups * chunks;
  const double flops = 2.0 * 16 * double(in_ch) * double(out_ch) * double(ntiles_all * images);
  // Fewer units than threads: one thread runs them and the GEMMs thread themselves.
#pragma omp parallel for schedule(dynamic, 1) if (units >= 2 && flops >= 4e6)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t g = unit / chunks, tile0 = unit % chunks * per_chunk;
    const int64_t ntiles = std::min(per_chunk, ntiles_all - tile0), cols = ntiles * images;
    thread_local AlignedScratch vbuf, mbuf;
    float* v = vbuf.get(size_t(16 * in_ch * cols));
    float* m = mbuf.get(size_t(16 * out_ch * cols));
    WinogradTiles tg = tiles;
    tg.in += g * in_group_stride;
    winograd_input_transform_isa(tg, tile0, ntiles, v);
    const float* ug = u + g * 16 * in_ch * out_ch;
    for (int xi = 0; xi < 16; ++xi) {
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

const char* winograd_setting(const char* op) {
  const char* env = std::getenv("CONVNET_WINOGRAD");
  if (!env || !*env) return "auto";
  for (const char* setting : {"auto", "on", "off"})
    if (!std::strcmp(env, setting)) return setting;
  CONVNET_CHECK(false, op << ": CONVNET_WINOGRAD must be auto, on or off, got '" << env << "'");
}

bool conv_uses_winograd(const char* op, const ConvParams& p, int forcing) {
  const bool applies = p.filter_size == 3 && p.stride == 1;
  if (p.variant == forcing) {
    CONVNET_CHECK(applies, op << ": variant " << forcing
                              << " (Winograd F(2x2,3x3)) needs 3x3 filters and stride 1, got "
                              << p.filter_size << "x" << p.filter_size << " stride " << p.stride);
    return true;
  }
  if (p.variant != 0 || !applies) return false;
  const char* setting = winograd_setting(op);
  if (!std::strcmp(setting, "auto"))
    return p.channels / p.groups >= kWinogradMinChannels &&
           p.filters / p.groups >= kWinogradMinChannels;
  return !std::strcmp(setting, "on");
}

void winograd_conv_fwd(const ConvParams& p, const float* x, const float* w, float* y,
                       bool accumulate, const Epilogue& epi) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  thread_local AlignedScratch ubuf;  // per issuing thread (each logical CPU device has one)
  float* u = ubuf.get(size_t(16 * cg * p.filters));
  transform_filters(p, w, false, u);
  WinogradTiles tiles{x, cg, p.height, p.width, p.images, p.padding,
                      p.out_h, p.out_w, (p.out_w + 1) / 2};
  winograd_run(tiles, p.groups, cg * p.height * p.width * int64_t(p.images), u, fg, y,
               accumulate, epi);
}

void winograd_conv_bwd_data(const ConvParams& p, const float* dy, const float* w, float* dx,
                            bool accumulate) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  thread_local AlignedScratch ubuf;
  float* u = ubuf.get(size_t(16 * cg * p.filters));
  transform_filters(p, w, true, u);
  WinogradTiles tiles{dy, fg, p.out_h, p.out_w, p.images, 2 - int64_t(p.padding),
                      p.height, p.width, (p.width + 1) / 2};
  winograd_run(tiles, p.groups, fg * p.out_h * p.out_w * int64_t(p.images), u, cg, dx,
               accumulate, Epilogue{});
}

}  // namespace convnet
