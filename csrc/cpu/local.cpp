// Locally-connected layers on the CPU (declared in csrc/common/local.h): one small GEMM per
// output position and group. With Cg = C/groups, Fg = F/groups, K = Cg*fs*fs, P = Ho*Wo and
// patch_p (C*fs*fs, N) the receptive field of position p copied out of x (zeros outside the
// image), for group g:
//   forward        y_p,g  (Fg, N) = w_p,g^T (Fg, K) x patch_p,g (K, N)
//   weight grad.   dw_p,g (K, Fg) = patch_p,g (K, N) x dy_p,g^T (N, Fg)
//   data gradient  col    (K, N)  = w_p,g (K, Fg)   x dy_p,g (Fg, N), added into dx's window
// The forward and the weight gradient run positions in parallel (each position's outputs are
// its own); the data gradient runs channel slices in parallel (windows of neighbouring positions
// overlap, a channel slice of dx belongs to one thread), adding the positions in order. Each
// GEMM runs on the thread that issues it, so the bits do not depend on the thread count.
// ConvParams::variant selects the SGEMM micro-kernel, as for conv (gemm_cpu.h: 0 best,
// 1 portable, 2 AVX2, 3 and 4 AVX-512).
#include "local.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "gemm_cpu.h"
#include "parallel.h"

namespace convnet {

int local_variant_count_cpu(LocalOp) { return kGemmVariants; }

namespace {

struct LocalDims {
  int64_t cg, fg, k, positions, images;  // k = taps per group = Cg*fs*fs
  explicit LocalDims(const ConvParams& p)
      : cg(p.channels / p.groups), fg(p.filters / p.groups),
        k(int64_t(p.channels / p.groups) * p.filter_size * p.filter_size),
        positions(int64_t(p.out_h) * p.out_w), images(p.images) {}
};

// patch (C*fs*fs, N): row (c, ky, kx) = images [0, N) of x at the tap's pixel for output
// position `pos`, or zeros outside the image.
void gather_patch(const ConvParams& p, const float* x, int64_t pos, float* patch) {
  const int64_t oy = pos / p.out_w, ox = pos % p.out_w, n = p.images;
  float* row = patch;
  for (int64_t c = 0; c < p.channels; ++c)
    for (int64_t ky = 0; ky < p.filter_size; ++ky) {
      const int64_t iy = oy * p.stride - p.padding + ky;
      for (int64_t kx = 0; kx < p.filter_size; ++kx, row += n) {
        const int64_t ix = ox * p.stride - p.padding + kx;
        if (iy < 0 || iy >= p.height || ix < 0 || ix >= p.width)
          std::memset(row, 0, sizeof(float) * n);
        else
          std::memcpy(row, x + ((c * p.height + iy) * p.width + ix) * n, sizeof(float) * n);
      }
    }
}

// Runs f(pos, patch) for every output position, the positions split between the threads when
// the layer is worth it; patch is the thread's buffer of C*fs*fs*N floats.
template <class F>
void for_each_position(const ConvParams& p, F&& f) {
  const LocalDims d(p);
  const int64_t patch_floats = d.k * p.groups * d.images;
  const bool threaded = patch_floats * d.fg * d.positions >= kMinParallelWork;
#pragma omp parallel if (threaded)
  {
    thread_local AlignedScratch scratch;
    float* patch = scratch.get(size_t(patch_floats));
#pragma omp for schedule(static)
    for (int64_t pos = 0; pos < d.positions; ++pos) f(pos, patch);
  }
}

// C (m, n) (+)= A (m, k) B (k, n) on the calling thread (gemm_driver.h: inside a team, one
// thread per problem).
void gemm(int64_t m, int64_t n, int64_t k, const GemmOperand& a, const GemmOperand& b, float* c,
          int64_t ldc, bool accumulate, int variant) {
  GemmProblem gp;
  gp.m = m, gp.n = n, gp.k = k;
  gp.a = &a, gp.b = &b, gp.c = c, gp.ldc = ldc;
  gp.beta = accumulate ? 1.f : 0.f;
  gemm_run(gp, variant);
}

}  // namespace

void local_fwd_cpu(const ConvParams& p, const float* x, const float* w, float* y,
                   bool accumulate) {
  check_gemm_variant("local_fwd", p.variant);
  const LocalDims d(p);
  for_each_position(p, [&](int64_t pos, float* patch) {
    gather_patch(p, x, pos, patch);
    const float* wp = w + pos * d.k * p.filters;
    for (int g = 0; g < p.groups; ++g)
      gemm(d.fg, d.images, d.k, StridedOperand(wp + g * d.fg, 1, p.filters),   // (f, k)
           StridedOperand(patch + g * d.k * d.images, 1, d.images),            // (n, k)
           y + (g * d.fg * d.positions + pos) * d.images, d.positions * d.images, accumulate,
           p.variant);
  });
}

void local_bwd_weights_cpu(const ConvParams& p, const float* x, const float* dy, float* dw,
                           bool accumulate) {
  check_gemm_variant("local_bwd_weights", p.variant);
  const LocalDims d(p);
  for_each_position(p, [&](int64_t pos, float* patch) {
    gather_patch(p, x, pos, patch);
    for (int g = 0; g < p.groups; ++g)
      gemm(d.k, d.fg, d.images, StridedOperand(patch + g * d.k * d.images, d.images, 1),  // (k, n)
           StridedOperand(dy + (g * d.fg * d.positions + pos) * d.images,
                          d.positions * d.images, 1),                                     // (f, n)
           dw + pos * d.k * p.filters + g * d.fg, p.filters, accumulate, p.variant);
  });
}

void local_bwd_data_cpu(const ConvParams& p, const float* dy, const float* w, float* dx,
                        bool accumulate) {
  check_gemm_variant("local_bwd_data", p.variant);
  const LocalDims d(p);
  const int64_t pixels = int64_t(p.height) * p.width, fs = p.filter_size, taps = fs * fs;
  const int64_t n = d.images;
  const bool threaded = d.k * p.groups * d.fg * d.positions * n >= kMinParallelWork;
#pragma omp parallel if (threaded)
  {
    // This thread's channels [cb, ce) of dx, every image. Split by channels, the threads read
    // different rows of each position's w and write different pages of dx; split by images (as
    // before), both read the same w_p and wrote the two halves of the same pixels at the same
    // time. Batch 128, 8x8 positions, AMD Zen 5, AVX-512: two threads ran local3 (64 -> 64
    // channels) in 3.10-3.19 ms against one thread's 2.76-2.78, local4 (64 -> 32) in 1.13-2.48
    // ms from process to process; split by channels, 1.47-1.53 and 0.90-0.98 ms.
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t cb = p.channels * t / nt, ce = p.channels * (t + 1) / nt;
    thread_local AlignedScratch scratch;
    float* col = scratch.get(size_t(std::min(d.cg, std::max<int64_t>(ce - cb, 1)) * taps * n));
    if (!accumulate && ce > cb)
      std::memset(dx + cb * pixels * n, 0, sizeof(float) * size_t((ce - cb) * pixels * n));
    for (int64_t c0 = cb, c1; c0 < ce; c0 = c1) {  // the thread's channels of one group
      const int64_t g = c0 / d.cg;
      c1 = std::min(ce, (g + 1) * d.cg);
      for (int64_t pos = 0; pos < d.positions; ++pos) {
        const int64_t oy = pos / p.out_w, ox = pos % p.out_w;
        // Rows (c, ky, kx) of w_p for c in [c0, c1): from row (c0 - g Cg) taps of the group's.
        const float* wp = w + pos * d.k * p.filters + (c0 - g * d.cg) * taps * p.filters;
        gemm((c1 - c0) * taps, n, d.fg, StridedOperand(wp + g * d.fg, p.filters, 1),  // (k, f)
             StridedOperand(dy + (g * d.fg * d.positions + pos) * n, 1, d.positions * n),
             col, n, false, p.variant);                                               // (n, f)
        // col row (c, ky, kx) is added to the pixel that tap reads.
        const float* crow = col;
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t ky = 0; ky < fs; ++ky) {
            const int64_t iy = oy * p.stride - p.padding + ky;
            for (int64_t kx = 0; kx < fs; ++kx, crow += n) {
              const int64_t ix = ox * p.stride - p.padding + kx;
              if (iy < 0 || iy >= p.height || ix < 0 || ix >= p.width) continue;
              float* dst = dx + ((c * p.height + iy) * p.width + ix) * n;
#pragma omp simd
              for (int64_t i = 0; i < n; ++i) dst[i] += crow[i];
            }
          }
      }
    }
  }
}

}  // namespace convnet
