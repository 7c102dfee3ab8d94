// Convolution on the CPU as implicit GEMMs (conv_operands.h feeds the blocked SGEMM straight
// from the images), one GEMM per group. With Cg = C/groups, Fg = F/groups, taps = Cg*fs*fs,
// P = Ho*Wo:
//   forward        y_g (Fg, P*N)    = w_g^T (Fg, taps)  x  im2col(x_g) (taps, P*N)
//   data gradient  stride 1: dx_g (Cg, H*W*N) = flip(w_g) (Cg, Fg*fs*fs) x im2col(dy_g) with
//                  padding fs-1-padding (a convolution of dy with the rotated filters);
//                  stride > 1: col = w_g (taps, Fg) x dy_g (Fg, P*N) in bounded chunks of
//                  positions, scatter-added into dx (col2im)
//   weight grad.   dw_g (taps, Fg)  = im2col(x_g) (taps, P*N) x dy_g^T (P*N, Fg)
// ConvParams::variant selects the SGEMM micro-kernel (gemm_cpu.h: 0 best, 1 portable, 2 AVX2,
// 3 and 4 AVX-512 14x32 and 6x64), so every kernel path is tested through the convolutions too.
// The forward's kDirectFwdVariant skips the GEMM: the direct kernel of conv_fwd_direct_kernels.h.
// Each pass has more variants beyond the micro-kernels: the forward and data gradient
// kWinogradVariant (winograd.h), Winograd F(2x2,3x3) or F(2x2,5x5) for 3x3 or 5x5 stride-1
// layers; the weight gradient kDirectWgradVariant, the direct kernel of conv_wgrad_kernels.h (no
// packing of im2col; the process's SIMD path), which variant 0 runs when a group has at most
// kDirectWgradMaxFilters filters, and kWinogradWgradVariant, Winograd's weight gradient
// (winograd_wgrad.cpp). Variant 0 takes Winograd where winograd_pays says so for the pass. The
// forward and stride-1 data-gradient GEMMs run in blocks of kImplicitGemmColumns columns of C,
// whatever the kernel's NC.
#include "conv.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "check.h"
#include "conv_fwd_direct.h"
#include "conv_operands.h"
#include "conv_wgrad.h"
#include "fc_dot.h"
#include "gemm_cpu.h"
#include "isa.h"
#include "parallel.h"
#include "winograd.h"

namespace convnet {

constexpr int kDirectWgradVariant = kGemmVariants;
// conv_fwd's and conv_bwd_data's variant after Winograd's: the direct kernel of
// conv_fwd_direct.h (the data gradient at stride 1 only). Variant 0 takes the forward up to
// kDirectFwdMaxFilters filters per group when the batch is a multiple of 64 (whole register tiles
// on every SIMD path). Measured against the implicit GEMM on the CIFAR-18% net's layers (32 and
// 64 filters, 5x5; AMD Zen 4, one thread): forward 1.02 / 1.29 / 1.45x at AVX-512 and 1.17 /
// 1.09 / 1.04x at AVX2 for its conv1-conv3; not measured above 64 filters. Winograd, where
// winograd_pays, comes first: on conv2 and conv3 it ran 1.00-1.06x this kernel at AVX-512 and
// 1.26-1.43x at AVX2 (forward and data gradient, one thread). With at most
// kDirectFwdFewChannels channels per group (an RGB input layer) it takes the forward up to
// kDirectFwdMaxFiltersFewChannels filters: the GEMM's k is then only 3 x fs x fs taps. AMD Zen 5,
// two threads, alternating in one process, 128 images, 224x224 with 11x11 filters at stride 4
// (AlexNet's conv1 with 96 filters, and 128 / 192): 1.04 / 1.00 / 1.06x at AVX-512, 1.05 / 1.01
// / 1.00x at AVX2; one thread (thread CPU time) conv1 1.06 / 1.05x. With many channels the GEMM
// stays ahead whatever the filters: 64 -> 128 3x3 stride 2 0.92 / 0.93x, 128 -> 256 0.81 /
// 0.71x, 256 -> 384 1x1 0.79 / 0.64x (AVX-512 / AVX2).
constexpr int kDirectFwdVariant = kWinogradVariant + 1;
constexpr int64_t kDirectFwdMaxFilters = 64;
constexpr int64_t kDirectFwdFewChannels = 3, kDirectFwdMaxFiltersFewChannels = 192;

static bool direct_forward_pays(const ConvParams& p) {
  const int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  return p.images % 64 == 0 &&
         (fg <= kDirectFwdMaxFilters ||
          (cg <= kDirectFwdFewChannels && fg <= kDirectFwdMaxFiltersFewChannels));
}

// The stride-1 data gradient, the same way with up to kDirectFwdMaxFilters channels per group:
// 1.22 / 1.28 / 1.49x the GEMM at AVX-512 (conv1 with 3 channels, conv2, conv3), but 0.94 /
// 0.95x at AVX2 for conv2 and conv3 (the 6x16 tile's 12 accumulators against the GEMM's), where
// only conv1's 3 channels gained (3.3x: 3 rows of the GEMM's 6-row tile).
static bool direct_data_gradient_pays(const ConvParams& p) {
  const int64_t cg = p.channels / p.groups;
  return p.stride == 1 && cg <= kDirectFwdMaxFilters && p.images % 64 == 0 &&
         (cpu_isa() == Isa::avx512 || cg <= 4);
}
static_assert(kWinogradVariant == kGemmVariants, "one extra variant number per pass");
static_assert(kWinogradWgradVariant == kDirectWgradVariant + 1, "the weight gradient's second");
// Up to this many filters per group the implicit GEMM's transposing pack of im2col (one per
// tap x column, each used for 2 x filters FLOPs) costs enough that the direct kernel is faster:
// measured 1.07-1.4x from 32 to 128 filters (one thread, AVX-512 and AVX2); not measured above.
constexpr int64_t kDirectWgradMaxFilters = 128;
// Columns per block of C in the forward and stride-1 data-gradient GEMMs (GemmProblem::max_nc):
// four output positions of a 128-image batch. m (filters or channels of a group) fits one block
// of A, so C's block is revisited at every k block, and the panels gather image rows that
// neighbouring positions share: with 512 columns both stay in L2. The AVX2 kernel's NC from the
// L3 size (4096) left conv2's C block (128 x 4096 floats, 2 MB) and its gathered rows spilling
// from L2: 512 ran conv2's forward 1.15-1.25x as fast (one thread, Intel Xeon, AVX2; 256 the
// same, 1024 between), and its data gradient, with the AVX2 kernel's prefetch of gathered rows
// (useless on the wide blocks), 1.3-1.4x. The AVX-512 6x64 kernel's NC is 512 already.
constexpr int64_t kImplicitGemmColumns = 512;

int conv_variant_count_cpu(ConvOp op) {
  if (op == ConvOp::conv_bwd_weights) return kWinogradWgradVariant + 1;
  if (op == ConvOp::conv_fwd || op == ConvOp::conv_bwd_data) return kDirectFwdVariant + 1;
  if (op == ConvOp::fc_bwd_data) return kFcDotVariant + 1;
  return kGemmVariants;  // the other fc passes: the micro-kernels only
}

// Throws ArgError unless `variant` is a micro-kernel this CPU runs or Winograd's (whose shape
// conditions conv_uses_winograd checks).
static void check_conv_variant(const char* op, int variant) {
  if (variant != kWinogradVariant) check_gemm_variant(op, variant);
}

static ImageGeometry input_geometry(const ConvParams& p, const float* x, int group) {
  int64_t cg = p.channels / p.groups;
  return ImageGeometry{x + group * cg * p.height * p.width * p.images,
                       p.height, p.width, p.images, p.filter_size, p.padding, p.stride,
                       p.out_h, p.out_w};
}

void conv_fwd_cpu(const ConvParams& p, const float* x, const float* w, float* y,
                  bool accumulate, const Epilogue& epi) {
  if (p.variant == kDirectFwdVariant) return conv_fwd_direct(p, x, w, y, accumulate, epi);
  check_conv_variant("conv_fwd", p.variant);
  if (conv_uses_winograd(ConvOp::conv_fwd, p))
    return winograd_conv_fwd(p, x, w, y, accumulate, epi);
  if (p.variant == 0 && direct_forward_pays(p)) return conv_fwd_direct(p, x, w, y, accumulate, epi);
  int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  int64_t cols = int64_t(p.out_h) * p.out_w * p.images;
  for (int g = 0; g < p.groups; ++g) {
    // w (taps, F) read as (rows = f, k = tap) of the group's filters.
    StridedOperand wt(w + g * fg, 1, p.filters);
    ImageColumnsOperand xcol(input_geometry(p, x, g));
    GemmProblem gp;
    gp.m = fg, gp.n = cols, gp.k = cg * p.filter_size * p.filter_size;
    gp.a = &wt, gp.b = &xcol, gp.c = y + g * fg * cols, gp.ldc = cols;
    gp.beta = accumulate ? 1.f : 0.f;
    gp.epi = epi.from_row(g * fg);
    gp.max_nc = kImplicitGemmColumns;
    gemm_run(gp, p.variant);
  }
}

// Stride 1: the data gradient is a convolution of dy (Fg, Ho, Wo, N) with the rotated, transposed
// filters, padding fs-1-padding, whose output is exactly (Cg, H, W, N).
static void conv_bwd_data_stride1(const ConvParams& p, const float* dy, const float* w, float* dx,
                                  bool accumulate) {
  int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  int64_t in_cols = int64_t(p.height) * p.width * p.images;
  int64_t out_cols = int64_t(p.out_h) * p.out_w * p.images;
  for (int g = 0; g < p.groups; ++g) {
    FlippedFiltersOperand wf(w + g * fg, p.filters, p.filter_size);
    ImageColumnsOperand dycol(ImageGeometry{dy + g * fg * out_cols, p.out_h, p.out_w, p.images,
                                            p.filter_size, p.filter_size - 1 - p.padding, 1,
                                            p.height, p.width});
    GemmProblem gp;
    gp.m = cg, gp.n = in_cols, gp.k = fg * p.filter_size * p.filter_size;
    gp.a = &wf, gp.b = &dycol, gp.c = dx + g * cg * in_cols, gp.ldc = in_cols;
    gp.beta = accumulate ? 1.f : 0.f;
    gp.max_nc = kImplicitGemmColumns;
    gemm_run(gp, p.variant);
  }
}

// Stride > 1: GEMM into a column buffer of a bounded number of output positions, then col2im.
static void conv_bwd_data_strided(const ConvParams& p, const float* dy, const float* w, float* dx,
                                  bool accumulate) {
  int64_t cg = p.channels / p.groups, fg = p.filters / p.groups, n_img = p.images;
  int64_t fs = p.filter_size, taps = cg * fs * fs;
  int64_t positions = int64_t(p.out_h) * p.out_w, out_cols = positions * n_img;
  int64_t in_cols = int64_t(p.height) * p.width * n_img;
  if (!accumulate) std::memset(dx, 0, sizeof(float) * p.channels * in_cols);
  // About 8 MB of columns per chunk (a few GEMMs per layer, each worth threading), allocated
  // once per issuing thread (two logical CPU devices issue from two threads).
  int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 21) / (taps * n_img));
  thread_local AlignedScratch colbuf;
  float* col = colbuf.get(size_t(taps) * std::min(chunk, positions) * n_img);
  for (int g = 0; g < p.groups; ++g) {
    StridedOperand wg(w + g * fg, p.filters, 1);  // rows = tap, k = f
    for (int64_t p0 = 0; p0 < positions; p0 += chunk) {
      int64_t np = std::min(chunk, positions - p0), ncols = np * n_img;
      StridedOperand dyg(dy + g * fg * out_cols + p0 * n_img, 1, out_cols);  // rows = column
      GemmProblem gp;
      gp.m = taps, gp.n = ncols, gp.k = fg;
      gp.a = &wg, gp.b = &dyg, gp.c = col, gp.ldc = ncols;
      gemm_run(gp, p.variant);
      // col2im, threads splitting dx's rows: each owns rows [y0, y1) of every channel, and adds
      // the taps that land there in the same order as one thread would. (Split by images, both
      // threads wrote the two halves of the same pixels at once: AlexNet's conv1 data gradient
      // took 119.6-128.0 ms so against 108.1-110.7 now, AMD Zen 5, AVX-512, two threads.)
      float* dxg = dx + g * cg * in_cols;
#pragma omp parallel if (int64_t(taps) * ncols >= kMinParallelWork)
      {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t y0 = p.height * t / nt, y1 = p.height * (t + 1) / nt;
        for (int64_t c = 0; c < cg; ++c)
          for (int64_t ky = 0; ky < fs; ++ky) {
            // The chunk's positions whose output row puts tap ky in [y0, y1):
            // oy * stride - padding + ky in [y0, y1), output rows [oy0, oy1).
            const int64_t oy0 = ceil_div(std::max<int64_t>(0, y0 + p.padding - ky), p.stride);
            const int64_t oy1 = ceil_div(std::max<int64_t>(0, y1 + p.padding - ky), p.stride);
            const int64_t q0 = std::clamp<int64_t>(oy0 * p.out_w - p0, 0, np);
            const int64_t q1 = std::clamp<int64_t>(oy1 * p.out_w - p0, 0, np);
            for (int64_t kx = 0; kx < fs; ++kx) {
              const float* crow = col + ((c * fs + ky) * fs + kx) * ncols;
              for (int64_t q = q0; q < q1; ++q) {
                int64_t pos = p0 + q, oy = pos / p.out_w, ox = pos % p.out_w;
                int64_t iy = oy * p.stride - p.padding + ky, ix = ox * p.stride - p.padding + kx;
                if (ix < 0 || ix >= p.width) continue;
                float* d = dxg + ((c * p.height + iy) * p.width + ix) * n_img;
                const float* s = crow + q * n_img;
#pragma omp simd
                for (int64_t n = 0; n < n_img; ++n) d[n] += s[n];
              }
            }
          }
      }
    }
  }
}

void conv_bwd_data_cpu(const ConvParams& p, const float* dy, const float* w, float* dx,
                       bool accumulate) {
  if (p.variant == kDirectFwdVariant) {
    CONVNET_CHECK(p.stride == 1, "conv_bwd_data: variant " << kDirectFwdVariant
                                     << " (direct) needs stride 1, got stride " << p.stride);
    return conv_bwd_data_direct(p, dy, w, dx, accumulate);
  }
  check_conv_variant("conv_bwd_data", p.variant);
  if (conv_uses_winograd(ConvOp::conv_bwd_data, p))
    return winograd_conv_bwd_data(p, dy, w, dx, accumulate);
  if (p.variant == 0 && direct_data_gradient_pays(p))
    return conv_bwd_data_direct(p, dy, w, dx, accumulate);
  if (p.stride == 1)
    conv_bwd_data_stride1(p, dy, w, dx, accumulate);
  else
    conv_bwd_data_strided(p, dy, w, dx, accumulate);
}

void conv_bwd_weights_cpu(const ConvParams& p, const float* x, const float* dy, float* dw,
                          bool accumulate) {
  int64_t cg = p.channels / p.groups, fg = p.filters / p.groups;
  if (conv_uses_winograd(ConvOp::conv_bwd_weights, p))
    return winograd_conv_bwd_weights(p, x, dy, dw, accumulate);
  if (p.variant == kDirectWgradVariant ||
      (p.variant == 0 && fg <= kDirectWgradMaxFilters))
    return conv_bwd_weights_direct(p, x, dy, dw, accumulate);
  check_gemm_variant("conv_bwd_weights", p.variant);
  int64_t cols = int64_t(p.out_h) * p.out_w * p.images;
  for (int g = 0; g < p.groups; ++g) {
    ImageTapsOperand xcol(input_geometry(p, x, g));
    StridedOperand dyt(dy + g * fg * cols, cols, 1);  // rows = f, k = column
    GemmProblem gp;
    gp.m = cg * p.filter_size * p.filter_size, gp.n = fg, gp.k = cols;
    gp.a = &xcol, gp.b = &dyt, gp.c = dw + g * fg, gp.ldc = p.filters;
    gp.beta = accumulate ? 1.f : 0.f;
    gemm_run(gp, p.variant);
  }
}

void bias_fwd_cpu(float* y, const float* b, int64_t filters, int64_t per_filter) {
#pragma omp parallel for schedule(static) if (filters * per_filter >= kMinParallelWork)
  for (int64_t f = 0; f < filters; ++f) {
    float bf = b[f];
    float* yf = y + f * per_filter;
#pragma omp simd
    for (int64_t i = 0; i < per_filter; ++i) yf[i] += bf;
  }
}

void bias_bwd_cpu(const float* dy, float* db, int64_t filters, int64_t per_filter,
                  bool accumulate) {
#pragma omp parallel for schedule(static) if (filters * per_filter >= kMinParallelWork)
  for (int64_t f = 0; f < filters; ++f) {
    const float* d = dy + f * per_filter;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < per_filter; ++i) s += d[i];
    db[f] = accumulate ? db[f] + s : s;
  }
}

}  // namespace convnet
