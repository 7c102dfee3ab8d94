// Convolution on cuda-convnet's layout (declared in csrc/common/conv.h; its biases: bias.cu).
//   x : (C, H, W, N)    w : (C/groups, fs, fs, F)    y : (F, Ho, Wo, N)
// Pixels outside the image (padding, and the far-edge overhang of the round-up output size) read
// as zero. Names below: Cg = C/groups and Fg = F/groups per group, P = Ho*Wo, K = Cg*fs*fs, and
// k = (c*fs + ky)*fs + kx numbers a filter tap (a row of w).
//
// Variants (ConvParams::variant; 0 picks 2 or 3 by shape):
//   1  direct: one thread per output element, summing straight from global memory. Readable,
//      no reuse; the reference the tiled kernels are checked against on the GPU.
//   2  implicit GEMM on the 64x64 register-blocked, double-buffered tile of tile_gemm.cuh (4x4
//      outputs per thread). Each op is a GEMM one of whose operands is gathered from the images
//      while being staged into shared memory (nothing is unfolded in global memory):
//        fwd          y_g  (Fg, P*N)    = w_g^T (Fg, K)       . patches (K, P*N)
//        bwd_data     dx_g (Cg, H*W*N)  = w_g   (Cg, fs*fs*Fg) . dy taps (fs*fs*Fg, H*W*N)
//        bwd_weights  dw_g (K, Fg)      = patches (K, P*N)    . dy_g^T (P*N, Fg)
//      Columns (position, image) keep the image innermost, so gathers coalesce along n, and a
//      batch of 1 still fills the tiles. bwd_weights reduces over P*N: it is split into chunks
//      (cuda-convnet's partial sums) computed by separate blocks into a scratch buffer, then summed
//      in a fixed order, so results are deterministic without atomics.
//   3  the kernels of 2 on the 128x128 tile (8x8 outputs per thread, K step 8): twice the
//      arithmetic per shared-memory read, for layers with >= 128 filters (channels, taps).
// Variant 0 picks 2 or 3, and bwd_weights' reduction split, by whole waves on the device
// (tile_gemm.cuh's plans; conv_plan_cuda says what it chose); 1 when a tensor spans 2^31
// elements or more, or the filter is wider than 15. The tiled loaders index in 32 bits; what a
// gathered element's address and bounds test need from the reduction index comes from per-launch
// tap tables (conv_taps.cuh), so a main loop does no division and no compares per element; a
// thread's own column is decoded once (FastDiv: no `/` or `%` by a run-time value).
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>

#include "conv.h"
#include "cuda_check.h"
#include "bench_support.h"
#include "device.h"
#include "conv_taps.cuh"
#include "fast_div.cuh"
#include "gemm.h"
#include "index_width.cuh"
#include "partial_sums.h"
#include "pixel_grid.h"
#include "tile_gemm.cuh"

namespace convnet {
namespace {

// Everything a kernel needs about the shapes, derived once on the host.
struct ConvDims {
  int C, H, W, N, F, fs, pad, stride, groups, Ho, Wo;
  int Cg, Fg, taps;    // taps = fs*fs
  int64_t P, PN, HWN;  // positions, positions*images, pixels*images
  int K;               // Cg * taps
};

ConvDims dims_of(const ConvParams& p) {
  ConvDims d;
  d.C = p.channels, d.H = p.height, d.W = p.width, d.N = p.images;
  d.F = p.filters, d.fs = p.filter_size, d.pad = p.padding, d.stride = p.stride;
  d.groups = p.groups, d.Ho = p.out_h, d.Wo = p.out_w;
  d.Cg = d.C / d.groups, d.Fg = d.F / d.groups, d.taps = d.fs * d.fs;
  d.P = int64_t(d.Ho) * d.Wo, d.PN = d.P * d.N, d.HWN = int64_t(d.H) * d.W * d.N;
  d.K = d.Cg * d.taps;
  return d;
}

// ======================= variant 1: direct =======================================================

// Thread mapping of the three (pixel_grid.h): one thread per (pixel, image) of the tensor written,
// blockIdx.x the pixel, the images over blockIdx.y x threadIdx.x (consecutive in a warp:
// coalesced). The pixel is decoded once per thread through FastDiv, and every loop walks its
// tensors by offsets of the index type I from the kernel's base pointers (index_width.cuh): int
// where direct_span has checked the sizes, so a step is one 32-bit add and a load's address one
// IMAD.WIDE; int64_t for tensors of 2^31 elements or more. No division and no multiply in a loop.
// pixel_grid refuses a grid of 2^31 pixels or more (y's F*Ho*Wo, dx's C*H*W, dw's K taps), naming
// the op's kernel.

// The divisors a direct kernel decodes its pixel with (FastDiv: numerators below 2^31, which
// pixel_grid's bound and the int-sized shapes guarantee).
struct DirectDivs {
  FastDiv a, b, c, d;
};

// Pixel (f, oy, ox) of y; divs: Wo, P, Fg. The taps of the window that lie in the image are a
// clipped box, so the sum skips nothing inside its loops and adds the same terms in the same order
// (c, ky, kx ascending) as a test per tap would.
template <class I>
__global__ void conv_fwd_direct_kernel(ConvDims d, DirectDivs divs, const float* __restrict__ x,
                                       const float* __restrict__ w, float* __restrict__ y,
                                       bool accumulate, Epilogue epi) {
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n >= d.N) return;
  const int pix = blockIdx.x;  // (f, oy, ox)
  const int f = divs.b.div(pix), pos = pix - f * int(d.P);
  const int oy = divs.a.div(pos), ox = pos - oy * d.Wo;
  const int iy0 = oy * d.stride - d.pad, ix0 = ox * d.stride - d.pad;
  const int ky_lo = max(0, -iy0), ky_hi = min(d.fs, d.H - iy0);
  const int kx_lo = max(0, -ix0), kx_hi = min(d.fs, d.W - ix0);
  const I x_row = I(d.W) * d.N, x_plane = I(d.HWN), w_plane = I(d.taps) * d.F;
  const I w_row = I(d.fs) * d.F;
  // x[c0, iy0 + ky_lo, ix0 + kx_lo, n] and w[0, ky_lo, kx_lo, f]: channel 0's first inside tap.
  I xc = (I(divs.c.div(f)) * d.Cg * d.H + iy0 + ky_lo) * x_row + I(ix0 + kx_lo) * d.N + n;
  I wc = I(ky_lo * d.fs + kx_lo) * d.F + f;
  float sum = 0.f;
  for (int c = 0; c < d.Cg; ++c, xc += x_plane, wc += w_plane) {
    I xr = xc, wr = wc;
    for (int ky = ky_lo; ky < ky_hi; ++ky, xr += x_row, wr += w_row) {
      I xp = xr, wp = wr;
      for (int kx = kx_lo; kx < kx_hi; ++kx, xp += d.N, wp += d.F) sum = fmaf(w[wp], x[xp], sum);
    }
  }
  float* out = y + (I(pix) * d.N + n);
  *out = epi.apply(accumulate ? *out + sum : sum, f);
}

// Pixel (c, iy, ix) of dx; divs: W, H, Cg, stride. The transposed convolution, gathering the
// outputs whose windows cover the pixel — no atomics. With iy + pad = qy*stride + ry, the taps
// that reach the pixel are ky = ry + j*stride, read by output oy = qy - j (likewise x), so the
// loops step through exactly those taps and outputs.
template <class I>
__global__ void conv_bwd_data_direct_kernel(ConvDims d, DirectDivs divs,
                                            const float* __restrict__ dy,
                                            const float* __restrict__ w, float* __restrict__ dx,
                                            bool accumulate) {
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n >= d.N) return;
  const int pix = blockIdx.x;  // (c, iy, ix)
  const int row = divs.a.div(pix), ix = pix - row * d.W;
  const int c = divs.b.div(row), iy = row - c * d.H;
  const int g = divs.c.div(c), cl = c - g * d.Cg;
  const int qy = divs.d.div(iy + d.pad), ry = iy + d.pad - qy * d.stride;
  const int qx = divs.d.div(ix + d.pad), rx = ix + d.pad - qx * d.stride;
  // Steps: the next tap (stride rows or columns of w) is read by the previous output.
  const I w_ky = I(d.stride) * d.fs * d.F, w_kx = I(d.stride) * d.F;
  const I dy_oy = I(d.Wo) * d.N, dy_f = I(d.PN);
  // w[cl, ry, rx, g*Fg] and dy[g*Fg, qy, qx, n].
  I wr = (I(cl * d.fs + ry) * d.fs + rx) * d.F + I(g) * d.Fg;
  I dyr = I(g) * d.Fg * dy_f + (I(qy) * d.Wo + qx) * d.N + n;
  float sum = 0.f;
  for (int ky = ry, oy = qy; ky < d.fs && oy >= 0; ky += d.stride, --oy, wr += w_ky,
           dyr -= dy_oy) {
    if (oy >= d.Ho) continue;
    I wk = wr, dyk = dyr;
    for (int kx = rx, ox = qx; kx < d.fs && ox >= 0; kx += d.stride, --ox, wk += w_kx,
             dyk -= d.N) {
      if (ox >= d.Wo) continue;
      I wf = wk, dyf = dyk;
      for (int f = 0; f < d.Fg; ++f, ++wf, dyf += dy_f) sum = fmaf(w[wf], dy[dyf], sum);
    }
  }
  float* out = dx + (I(pix) * d.N + n);
  *out = accumulate ? *out + sum : sum;
}

// Pixel = tap k of dw (K, F), the filters f over the threads; divs: taps, fs, Fg. Sums over the
// positions (oy, ox ascending, those whose tap lies in the image) and images.
template <class I>
__global__ void conv_bwd_weights_direct_kernel(ConvDims d, DirectDivs divs,
                                               const float* __restrict__ x,
                                               const float* __restrict__ dy,
                                               float* __restrict__ dw, bool accumulate) {
  const int f = blockIdx.y * blockDim.x + threadIdx.x;
  if (f >= d.F) return;
  const int k = blockIdx.x;  // (c, ky, kx)
  const int c = divs.a.div(k), t = k - c * d.taps;
  const int ky = divs.b.div(t), kx = t - ky * d.fs;
  const I x_oy = I(d.stride) * d.W * d.N, x_ox = I(d.stride) * d.N;
  const I dy_oy = I(d.Wo) * d.N;
  // x[g*Cg + c, ky - pad, kx - pad, 0]: the tap's pixel for output (0, 0), maybe outside.
  I xr = I(divs.c.div(f) * d.Cg + c) * d.HWN + (I(ky - d.pad) * d.W + (kx - d.pad)) * d.N;
  I dyr = I(f) * d.PN;
  float sum = 0.f;
  for (int oy = 0, iy = ky - d.pad; oy < d.Ho; ++oy, iy += d.stride, xr += x_oy, dyr += dy_oy) {
    if (iy < 0 || iy >= d.H) continue;
    I xp = xr, dyp = dyr;
    for (int ox = 0, ix = kx - d.pad; ox < d.Wo; ++ox, ix += d.stride, xp += x_ox, dyp += d.N) {
      if (ix < 0 || ix >= d.W) continue;
      for (int n = 0; n < d.N; ++n) sum = fmaf(x[xp + n], dy[dyp + n], sum);
    }
  }
  float* out = dw + (I(k) * d.F + f);
  *out = accumulate ? *out + sum : sum;
}

// A bound on the magnitude of every offset a direct kernel forms, those one step past a loop's
// end and those of a window hanging over the top-left edge included: x's (rows up to C*H plus a
// window past the last output, columns likewise) and dy's (F + 1 planes, rows and columns up to
// fs + stride past the output) extents, and w's (a tap step past the last tap).
int64_t direct_span(const ConvDims& d) {
  const int64_t x = (int64_t(d.C) * d.H + int64_t(d.Ho) * d.stride + d.fs + d.pad + 1) *
                    (int64_t(d.W) + int64_t(d.Wo) * d.stride + d.fs + d.pad + 1) * d.N;
  const int64_t y = (int64_t(d.F) + 1) * (int64_t(d.Ho) + d.fs + d.stride + 1) *
                    (int64_t(d.Wo) + d.fs + d.stride + 1) * d.N;
  const int64_t w = (int64_t(d.Cg) * d.fs + d.fs + d.stride + 1) * (d.fs + d.stride + 1) * d.F;
  return std::max({x, y, w});
}

// ======================= variant 2: implicit GEMM =================================================

using Tile64 = TileShape<64, 64, 16, 4, 4>;
using Tile128 = TileShape<128, 128, 8, 8, 8>;

TileDims tile_dims(const ConvDims& d) {
  TileDims t;
  t.H = d.H, t.W = d.W, t.N = d.N, t.F = d.F, t.fs = d.fs, t.pad = d.pad, t.stride = d.stride;
  t.Ho = d.Ho, t.Wo = d.Wo, t.Cg = d.Cg, t.Fg = d.Fg, t.taps = d.taps, t.K = d.K;
  t.P = int(d.P), t.PN = int(d.PN), t.HWN = int(d.HWN);
  t.by_N = FastDiv(d.N), t.by_W = FastDiv(d.W), t.by_Wo = FastDiv(d.Wo);
  t.by_stride = FastDiv(d.stride);
  return t;
}

// Do 32-bit indices reach every element of x, w, y and bwd_weights' partial sums and every index
// a gather forms before its bounds test: in x, ((c*H + iy0 + ky)*W + ix0 + kx)*N + n with
// iy0 <= Ho*s and ix0 <= Wo*s; in dy, the data gradient's thread base ((f*Ho + qy)*Wo + qx)*N + n
// (qy < Ho + fs, qx < Wo + fs) plus a table offset up to F*P*N. Bounded generously: the tiled
// variants give up a factor of 2 to 4 of the 2^31 range for tensors of a few channels. And do
// the filters fit the tap bits (conv_taps.cuh)?
bool fits_tiles(const ConvDims& d, int64_t splits = 1) {
  const int64_t x_rows = int64_t(d.C) * d.H + int64_t(d.Ho) * d.stride + d.fs;
  const int64_t x_cols = int64_t(d.W) + int64_t(d.Wo) * d.stride + d.fs;
  const int64_t dy_rows = (2 * int64_t(d.F) + 1) * d.Ho + d.fs;
  return fits_int32(int64_t(d.C) * d.HWN) && fits_int32(int64_t(d.F) * d.PN) &&
         fits_int32(int64_t(d.K) * d.F * splits) && fits_int32(x_rows * x_cols * d.N) &&
         fits_int32(dy_rows * (int64_t(d.Wo) + d.fs) * d.N) && d.N > 0 && d.W > 0 &&
         d.Wo > 0 && d.fs <= kMaxTileFilter;
}

// fwd, operand B: patches (K, P*N), element (k, col = p*N + n) = x[c, oy*s - pad + ky, ...].
// A thread always loads the same column (tid % BN) at rows tid / BN + e * (threads / BN), so the
// column's window is decoded once; the rows' offsets and tap bits come from fwd_taps.
// Consecutive threads take consecutive images: coalesced.
template <class S>
struct PatchColumnsLoader {
  static constexpr int BN = S::kBN, kStep = S::kThreads / BN;
  static constexpr int kRegs = S::kBK * BN / S::kThreads;
  static_assert(S::kThreads % BN == 0, "whole rows per pass");
  const float* x;    // the whole of x: its address stays a kernel parameter
  int corner;        // index of x[g*Cg, iy0, ix0, n], the column's window (may lie outside x)
  const int2* taps;  // fwd_taps + this thread's first row
  unsigned inside;   // the window's inside mask; 0 for a column past the end

  __device__ __forceinline__ PatchColumnsLoader(const TileDims& d, const float* xx, int c0,
                                                const int2* fwd_taps, int col0)
      : x(xx) {
    const int col = col0 + int(threadIdx.x) % BN;
    const bool valid = col < d.PN;
    const int p = valid ? d.by_N.div(col) : 0, n = valid ? col - p * d.N : 0;
    const int oy = d.by_Wo.div(p);
    const int iy0 = oy * d.stride - d.pad, ix0 = (p - oy * d.Wo) * d.stride - d.pad;
    corner = ((c0 * d.H + iy0) * d.W + ix0) * d.N + n;
    taps = fwd_taps + int(threadIdx.x) / BN;
    inside = valid ? axis_bits(iy0, d.H, d.fs) | axis_bits(ix0, d.W, d.fs) << 16 : 0u;
  }
  // The table is padded to whole K steps with taps never inside: k_end needs no test.
  __device__ __forceinline__ void fetch(int k0, int /*k_end*/, float* r) const {
    const int2* t = taps + k0;
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int2 tap = t[e * kStep];
      r[e] = (unsigned(tap.y) & ~inside) == 0 ? x[corner + tap.x] : 0.f;
    }
  }
  __device__ __forceinline__ void stash(const float* r, float* tile) const {
#pragma unroll
    for (int e = 0; e < kRegs; ++e)
      tile[(int(threadIdx.x) / BN + e * kStep) * S::pitch(BN) + int(threadIdx.x) % BN] = r[e];
  }
};

// Block (bx, by, g): filters [by*BM, +BM) x columns [bx*BN, +BN) of group g.
template <class S>
__global__ void __launch_bounds__(S::kThreads, S::kMinBlocks)
    conv_fwd_tile_kernel(TileDims d, const float* __restrict__ x, const float* __restrict__ w,
                         const int2* __restrict__ fwd_taps, float* __restrict__ y,
                         bool accumulate, Epilogue epi, bool vec_w, bool vec_y) {
  const int g = blockIdx.z;
  const int m0 = int(blockIdx.y) * S::kBM, n0 = int(blockIdx.x) * S::kBN;
  // w_g^T: element (f, k) at w[k*F + g*Fg + f], contiguous along f.
  const MatrixLoader<S, S::kBM, true> la{w, g * d.Fg, d.F, d.Fg, m0, vec_w};
  const PatchColumnsLoader<S> lb(d, x, g * d.Cg, fwd_taps, n0);
  float acc[S::kTM][S::kTN];
  tile_gemm<S>(la, lb, 0, d.K, acc);
  tile_store<S>(acc, y + g * d.Fg * d.PN, d.PN, d.Fg, d.PN, m0, n0, 1.f,
                accumulate ? 1.f : 0.f, vec_y, epi.from_row(g * d.Fg));
}

// bwd_data, operand A: w_g (Cg, fs*fs*Fg), element (c, r = t*Fg + f) = w[c, t, g*Fg + f] (its
// offset from w[c, 0, g*Fg] in data_woffs). Thread reads reduction index tid % BK (consecutive
// filters: coalesced) for rows tid / BK + e * (threads / BK).
template <class S>
struct WeightTapsLoader {
  static constexpr int BK = S::kBK, BM = S::kBM, kStep = S::kThreads / BK;
  static constexpr int kRegs = BK * BM / S::kThreads;
  const float* w;    // the whole of w: its address stays a kernel parameter
  int first;         // index of w[c, 0, g*Fg], this thread's first channel c
  const int* woffs;  // data_woffs + tid % BK
  int rows;          // channels left from this thread's first one: row e exists if e*kStep < rows
  int row_step;      // kStep channels of w: kStep * fs*fs * F

  __device__ __forceinline__ WeightTapsLoader(const TileDims& d, const float* ww, int f0,
                                              const int* data_woffs, int c0)
      : w(ww) {
    const int c = c0 + int(threadIdx.x) / BK;
    first = c * d.taps * d.F + f0;
    woffs = data_woffs + int(threadIdx.x) % BK;
    rows = d.Cg - c;
    row_step = kStep * d.taps * d.F;
  }
  __device__ __forceinline__ void fetch(int k0, int k_end, float* r) const {
    const bool in = k0 + int(threadIdx.x) % BK < k_end;
    const int i = first + woffs[k0];
#pragma unroll
    for (int e = 0; e < kRegs; ++e) r[e] = (in && e * kStep < rows) ? w[i + e * row_step] : 0.f;
  }
  __device__ __forceinline__ void stash(const float* r, float* tile) const {
#pragma unroll
    for (int e = 0; e < kRegs; ++e)
      tile[(int(threadIdx.x) % BK) * S::pitch(BM) + int(threadIdx.x) / BK + e * kStep] = r[e];
  }
};

// bwd_data, operand B: dy taps (fs*fs*Fg, H*W*N), element (r = t*Fg + f, col = pixel*N + n) =
// dy[g*Fg + f, oy, ox, n] when tap t = (ky, kx) of output (oy, ox) lands on the pixel, else 0:
// iy + pad = oy*s + ky. With iy + pad = qy*s + ry, the taps that land are ky = ry + j*s, read by
// oy = qy - j = qy - ky/s, so the element sits at (qy*Wo + qx)*N (the thread's base) plus the
// table's f*P*N - ((ky/s)*Wo + kx/s)*N, and the inside mask holds the ky (kx) with oy (ox) in
// range. A thread keeps one column (its pixel decoded once), as PatchColumnsLoader.
template <class S>
struct DyTapsLoader {
  static constexpr int BN = S::kBN, kStep = S::kThreads / BN;
  static constexpr int kRegs = S::kBK * BN / S::kThreads;
  const float* dy;    // the whole of dy: its address stays a kernel parameter
  int base;           // index of dy[g*Fg, qy, qx, n] (may lie outside dy)
  const int2* taps;   // data_taps + this thread's first row
  unsigned inside;

  __device__ __forceinline__ DyTapsLoader(const TileDims& d, const float* ddy, int f0,
                                          const int2* data_taps, int col0)
      : dy(ddy) {
    const int col = col0 + int(threadIdx.x) % BN;
    const bool valid = col < d.HWN;
    const int pix = valid ? d.by_N.div(col) : 0, n = valid ? col - pix * d.N : 0;
    const int iy = d.by_W.div(pix), iyp = iy + d.pad, ixp = pix - iy * d.W + d.pad;
    const int qy = d.by_stride.div(iyp), qx = d.by_stride.div(ixp);
    base = ((f0 * d.Ho + qy) * d.Wo + qx) * d.N + n;
    taps = data_taps + int(threadIdx.x) / BN;
    inside = valid ? strided_axis_bits(qy, iyp - qy * d.stride, d.stride, d.Ho, d.fs) |
                         strided_axis_bits(qx, ixp - qx * d.stride, d.stride, d.Wo, d.fs) << 16
                   : 0u;
  }
  // The table is padded to whole K steps with taps never inside: k_end needs no test.
  __device__ __forceinline__ void fetch(int k0, int /*k_end*/, float* r) const {
    const int2* t = taps + k0;
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int2 tap = t[e * kStep];
      r[e] = (unsigned(tap.y) & ~inside) == 0 ? dy[base + tap.x] : 0.f;
    }
  }
  __device__ __forceinline__ void stash(const float* r, float* tile) const {
#pragma unroll
    for (int e = 0; e < kRegs; ++e)
      tile[(int(threadIdx.x) / BN + e * kStep) * S::pitch(BN) + int(threadIdx.x) % BN] = r[e];
  }
};

// Block (bx, by, g): channels [by*BM, +BM) x (pixel, image) columns [bx*BN, +BN) of group g.
template <class S>
__global__ void __launch_bounds__(S::kThreads, S::kMinBlocks)
    conv_bwd_data_tile_kernel(TileDims d, const float* __restrict__ dy,
                              const float* __restrict__ w, const int2* __restrict__ data_taps,
                              const int* __restrict__ data_woffs, float* __restrict__ dx,
                              bool accumulate, bool vec_dx) {
  const int g = blockIdx.z;
  const int m0 = int(blockIdx.y) * S::kBM, n0 = int(blockIdx.x) * S::kBN;
  const WeightTapsLoader<S> la(d, w, g * d.Fg, data_woffs, m0);
  const DyTapsLoader<S> lb(d, dy, g * d.Fg, data_taps, n0);
  float acc[S::kTM][S::kTN];
  tile_gemm<S>(la, lb, 0, d.taps * d.Fg, acc);
  tile_store<S>(acc, dx + g * d.Cg * d.HWN, d.HWN, d.Cg, d.HWN, m0, n0, 1.f,
                accumulate ? 1.f : 0.f, vec_dx);
}

// bwd_weights, operand A: patches (K, P*N), element (k, r = p*N + n). A thread reads reduction
// index tid % BK (consecutive images: coalesced) for the fixed taps tid / BK + e * (threads / BK).
// Per K step it decodes its r into the position p (positions table: window corner and inside
// mask) and image n; the block's BM taps are copied once from fwd_taps into shared memory.
template <class S>
struct PatchRowsLoader {
  static constexpr int BK = S::kBK, BM = S::kBM, kStep = S::kThreads / BK;
  static constexpr int kRegs = BK * BM / S::kThreads;
  static_assert(S::kThreads >= BM, "one thread per tap fills the table");
  const TileDims& d;
  const float* x;  // the whole of x: its address stays a kernel parameter
  int first;       // index of the group's first channel
  const int2* positions;
  const int2* taps;

  __device__ __forceinline__ PatchRowsLoader(const TileDims& dd, const float* xx, int c0,
                                             const int2* fwd_taps, const int2* pos, int k0)
      : d(dd), x(xx), first(c0 * dd.H * dd.W * dd.N), positions(pos) {
    __shared__ int2 table[BM];
    const int tid = threadIdx.x;
    // fwd_taps is padded to whole 128-tap tiles, so every block's BM taps exist.
    if (tid < BM) table[tid] = fwd_taps[k0 + tid];
    __syncthreads();
    taps = table;
  }
  __device__ __forceinline__ void fetch(int r0, int r_end, float* r) const {
    const int rr = r0 + int(threadIdx.x) % BK;
    const int p = rr < r_end ? d.by_N.div(rr) : d.P;  // entry P: nothing inside
    const int2 pos = positions[p];
    const int corner = first + pos.x + (rr - p * d.N);
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int2 tap = taps[int(threadIdx.x) / BK + e * kStep];
      r[e] = (unsigned(tap.y) & ~unsigned(pos.y)) == 0 ? x[corner + tap.x] : 0.f;
    }
  }
  __device__ __forceinline__ void stash(const float* r, float* tile) const {
#pragma unroll
    for (int e = 0; e < kRegs; ++e)
      tile[(int(threadIdx.x) % BK) * S::pitch(BM) + int(threadIdx.x) / BK + e * kStep] = r[e];
  }
};

// Block (bx, by, z = g*splits + s): taps [by*BM, +BM) x filters [bx*BN, +BN) of group g, summed
// over the reduction chunk s: [s*chunk, min((s+1)*chunk, P*N)). Writes dw directly when there is
// one chunk, else its partial sum (K, F) into out + s*K*F.
template <class S>
__global__ void __launch_bounds__(S::kThreads, S::kMinBlocks)
    conv_bwd_weights_tile_kernel(TileDims d, const float* __restrict__ x,
                                 const float* __restrict__ dy, const int2* __restrict__ fwd_taps,
                                 const int2* __restrict__ positions, float* __restrict__ out,
                                 int splits, int chunk, float beta, bool vec_dy, bool vec_out) {
  const int g = int(blockIdx.z) / splits, s = int(blockIdx.z) % splits;
  const int m0 = int(blockIdx.y) * S::kBM, n0 = int(blockIdx.x) * S::kBN;
  const PatchRowsLoader<S> la(d, x, g * d.Cg, fwd_taps, positions, m0);
  // dy_g^T: element (r, f) at dy[(g*Fg + f)*P*N + r], contiguous along r.
  const MatrixLoader<S, S::kBN, false> lb{dy, g * d.Fg * d.PN, d.PN, d.Fg, n0, vec_dy};
  const int r0 = s * chunk, r1 = chunk < d.PN - r0 ? r0 + chunk : d.PN;
  float acc[S::kTM][S::kTN];
  tile_gemm<S>(la, lb, r0, r1, acc);
  tile_store<S>(acc, out + s * d.K * d.F + g * d.Fg, d.F, d.K, d.Fg, m0, n0, 1.f, beta, vec_out);
}


// ======================= launchers ================================================================

// The variant asked for, checked.
void check_variant(const ConvParams& p, const char* op) {
  CONVNET_CHECK(p.variant >= 0 && p.variant <= 3,
                op << ": variant " << p.variant << " does not exist (0..3)");
}

// Variant 0's choice for fwd (rows = Fg filters, cols = P*N) and bwd_data (rows = Cg channels,
// cols = H*W*N): the tile by whole waves, or the direct kernel past 32-bit indices.
TilePlan plan_gemm_like(const ConvDims& d, int64_t rows, int64_t cols, int dev) {
  if (!fits_tiles(d)) {
    TilePlan direct;
    direct.variant = 1;
    return direct;
  }
  return plan_tile(rows, cols, d.groups, dev, 3, 2);
}

// bwd_weights: (taps K x filters Fg) tiles per group, the P*N reduction split into chunks summed
// by separate blocks. For each tile, the split with the fewest whole waves per unit of
// reduction (the smallest such, fewer partials to add), each chunk >= 8 K steps; then the
// cheaper tile (plan_cost). The choice depends on the shapes and the SM count only, so a problem
// sums in the same order every run on a given device.
TilePlan plan_bwd_weights(const ConvDims& d, int dev, int force_variant) {
  TilePlan best;
  if (d.PN == 0 || (force_variant == 0 && !fits_tiles(d))) {
    best.variant = 1;
    return best;
  }
  int sms = 0;
  const int wave = wave_of(dev, &sms);
  double best_cost = 0;
  for (int tile : {128, 64}) {
    const int variant = tile == 128 ? 3 : 2, bk = tile == 128 ? 8 : 16;
    if (force_variant != 0 && force_variant != variant) continue;
    TilePlan p;
    p.variant = variant, p.tile = tile, p.sms = sms, p.wave = wave;
    const int64_t tiles = ((d.K + tile - 1) / tile) * ((d.Fg + tile - 1) / tile) * d.groups;
    const int64_t most = std::max<int64_t>(
        1, std::min<int64_t>({d.PN / (8 * bk), 65535 / d.groups, 4 * p.wave}));
    double cost = 0;
    for (int64_t s = 1; s <= most; ++s) {
      const int64_t chunk = ((d.PN + s - 1) / s + bk - 1) / bk * bk;
      const int64_t splits = (d.PN + chunk - 1) / chunk;
      if (splits != s || !fits_tiles(d, splits)) continue;
      const double c = plan_cost(tiles * splits, p.wave, tile, chunk);
      if (s == 1 || c < cost) cost = c, p.splits = splits, p.chunk = chunk;
    }
    p.blocks = tiles * p.splits;
    if (best.variant == 0 || cost < best_cost) best = p, best_cost = cost;
  }
  return best;
}

template <class S>
dim3 tile_grid(int64_t cols, int64_t rows, int64_t z, const char* op) {
  const int64_t gx = (cols + S::kBN - 1) / S::kBN, gy = (rows + S::kBM - 1) / S::kBM;
  CONVNET_CHECK(gx <= 0x7fffffff && gy <= 65535 && z <= 65535,
                op << ": grid of " << gx << " x " << gy << " x " << z << " tiles is too large");
  return dim3{unsigned(gx), unsigned(gy), unsigned(z)};
}

// May every group's slice p + g*group_stride of a matrix with row stride ld take float4 access?
bool groups_aligned(const float* p, int64_t group_stride, int64_t ld, int groups) {
  for (int g = 0; g < groups; ++g)
    if (!quad_aligned(p + g * group_stride, ld)) return false;
  return true;
}

void check_fits(const ConvDims& d, const char* op, int64_t splits = 1) {
  CONVNET_CHECK(fits_tiles(d, splits),
                op << ": x " << d.C << "x" << d.H << "x" << d.W << "x" << d.N << ", " << d.F
                   << " filters of " << d.fs << "x" << d.fs << ": a tensor spans >= 2^31 "
                   << "elements or the filter is wider than " << kMaxTileFilter
                   << ", beyond the tiled variants (variant 1 or 0 handles it)");
}

// The tap tables (conv_taps.cuh) of a launch, by device and shape: built by the first launch that
// needs them, on the device's stream (current_stream: every later launch on the device queues
// behind it), and kept for the life of the process (a few KB per conv shape; a net has a handful
// of shapes). The launches after the first allocate nothing, free nothing (under emulation a
// free is a synchronisation point, which would hide a missing stream wait from the executor's
// tests) and run no table kernel.
enum class Table { fwd_taps, data_taps, positions };

// fwd_taps is padded to whole 128-tap tiles (so to whole K steps of both tiles too); data_taps
// (then data_woffs) to whole K steps of both tiles; positions has P + 1 entries.
int table_entries(Table t, const TileDims& d) {
  switch (t) {
    case Table::fwd_taps: return (d.K + 127) / 128 * 128;
    case Table::data_taps: return (d.taps * d.Fg + 15) / 16 * 16;
    default: return d.P + 1;
  }
}

const void* tap_table(Table t, const TileDims& d) {
  using Key = std::array<int, 18>;
  static std::mutex mutex;
  static auto* tables = new std::map<Key, DeviceBuffer*>();  // never freed: see above
  const int dev = current_device();
  const Key key{dev,     int(t), d.H,  d.W,  d.N, d.F,    d.fs, d.pad, d.stride,
                d.Ho,    d.Wo,   d.Cg, d.Fg, d.taps, d.K, d.P,  d.PN,  d.HWN};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = tables->find(key);
  if (it != tables->end()) return it->second->ptr;
  const int count = table_entries(t, d);
  const size_t entry = t == Table::data_taps ? sizeof(int2) + sizeof(int) : sizeof(int2);
  auto* buf = new DeviceBuffer(size_t(count) * entry, dev);
  cudaStream_t s = current_stream();
  int2* entries = buf->as<int2>();
  switch (t) {
    case Table::fwd_taps:
      CONVNET_LAUNCH(fwd_taps_kernel, grid_for(count, 256), 256, 0, s, d, TapDivs(d), entries,
                     count);
      break;
    case Table::data_taps:
      CONVNET_LAUNCH(data_taps_kernel, grid_for(count, 256), 256, 0, s, d, TapDivs(d), entries,
                     reinterpret_cast<int*>(entries + count), count);
      break;
    default:
      CONVNET_LAUNCH(positions_kernel, grid_for(count, 256), 256, 0, s, d, entries);
  }
  tables->emplace(key, buf);
  return buf->ptr;
}

template <class S>
void conv_fwd_tiled(const ConvDims& d, const float* x, const float* w, float* y, bool accumulate,
                    const Epilogue& epi) {
  check_fits(d, "conv_fwd");
  const bool vec_w = groups_aligned(w, d.Fg, d.F, d.groups);
  const bool vec_y = groups_aligned(y, int64_t(d.Fg) * d.PN, d.PN, d.groups);
  const TileDims td = tile_dims(d);
  const auto* taps = static_cast<const int2*>(tap_table(Table::fwd_taps, td));
  CONVNET_LAUNCH(conv_fwd_tile_kernel<S>, tile_grid<S>(d.PN, d.Fg, d.groups, "conv_fwd"),
                 S::kThreads, 0, current_stream(), td, x, w, taps, y, accumulate, epi, vec_w,
                 vec_y);
}

template <class S>
void conv_bwd_data_tiled(const ConvDims& d, const float* dy, const float* w, float* dx,
                         bool accumulate) {
  check_fits(d, "conv_bwd_data");
  const bool vec_dx = groups_aligned(dx, int64_t(d.Cg) * d.HWN, d.HWN, d.groups);
  const TileDims td = tile_dims(d);
  const auto* taps = static_cast<const int2*>(tap_table(Table::data_taps, td));
  const auto* woffs = reinterpret_cast<const int*>(taps + table_entries(Table::data_taps, td));
  CONVNET_LAUNCH(conv_bwd_data_tile_kernel<S>,
                 tile_grid<S>(d.HWN, d.Cg, d.groups, "conv_bwd_data"), S::kThreads, 0,
                 current_stream(), td, dy, w, taps, woffs, dx, accumulate, vec_dx);
}

template <class S>
void conv_bwd_weights_tiled(const ConvDims& d, const TilePlan& plan, const float* x,
                            const float* dy, float* dw, bool accumulate) {
  check_fits(d, "conv_bwd_weights", plan.splits);
  const int64_t count = int64_t(d.K) * d.F;
  cudaStream_t s = current_stream();
  const bool vec_dy = groups_aligned(dy, int64_t(d.Fg) * d.PN, d.PN, d.groups);
  const dim3 grid = tile_grid<S>(d.Fg, d.K, d.groups * plan.splits, "conv_bwd_weights");
  const TileDims td = tile_dims(d);
  const auto* taps = static_cast<const int2*>(tap_table(Table::fwd_taps, td));
  const auto* positions = static_cast<const int2*>(tap_table(Table::positions, td));
  if (plan.splits == 1) {
    CONVNET_LAUNCH(conv_bwd_weights_tile_kernel<S>, grid, S::kThreads, 0, s, td, x, dy, taps,
                   positions, dw, 1, int(plan.chunk), accumulate ? 1.f : 0.f, vec_dy,
                   groups_aligned(dw, d.Fg, d.F, d.groups));
    return;
  }
  // Freed blocks are only reused by later work on this device's one stream: safe while queued.
  DeviceBuffer partials(size_t(plan.splits * count) * sizeof(float), current_device());
  float* part = partials.as<float>();
  CONVNET_LAUNCH(conv_bwd_weights_tile_kernel<S>, grid, S::kThreads, 0, s, td, x, dy, taps,
                 positions, part, int(plan.splits), int(plan.chunk), 0.f, vec_dy,
                 groups_aligned(part, d.Fg, d.F, d.groups));
  sum_partials_cuda(part, dw, count, int(plan.splits), accumulate);
}

// Variant 1's launchers (the kernels' thread mapping above), on 32-bit offsets where
// direct_span allows.
void conv_fwd_direct(const ConvDims& d, const float* x, const float* w, float* y,
                     bool accumulate, const Epilogue& epi) {
  const PixelGrid g = pixel_grid(int64_t(d.F) * d.P, d.N, "conv_fwd variant 1");
  const DirectDivs divs{FastDiv(d.Wo), FastDiv(int(d.P)), FastDiv(d.Fg), FastDiv()};
  with_index(direct_span(d), [&](auto index) {
    CONVNET_LAUNCH((conv_fwd_direct_kernel<decltype(index)>), g.grid, g.block, 0,
                   current_stream(), d, divs, x, w, y, accumulate, epi);
  });
}

void conv_bwd_data_direct(const ConvDims& d, const float* dy, const float* w, float* dx,
                          bool accumulate) {
  const PixelGrid g = pixel_grid(int64_t(d.C) * d.H * d.W, d.N, "conv_bwd_data variant 1");
  const DirectDivs divs{FastDiv(d.W), FastDiv(d.H), FastDiv(d.Cg), FastDiv(d.stride)};
  with_index(direct_span(d), [&](auto index) {
    CONVNET_LAUNCH((conv_bwd_data_direct_kernel<decltype(index)>), g.grid, g.block, 0,
                   current_stream(), d, divs, dy, w, dx, accumulate);
  });
}

void conv_bwd_weights_direct(const ConvDims& d, const float* x, const float* dy, float* dw,
                             bool accumulate) {
  const PixelGrid g = pixel_grid(d.K, d.F, "conv_bwd_weights variant 1");
  const DirectDivs divs{FastDiv(d.taps), FastDiv(d.fs), FastDiv(d.Fg), FastDiv()};
  with_index(direct_span(d), [&](auto index) {
    CONVNET_LAUNCH((conv_bwd_weights_direct_kernel<decltype(index)>), g.grid, g.block, 0,
                   current_stream(), d, divs, x, dy, dw, accumulate);
  });
}

// bwd_data's tile walks every tap of every dy column (K = fs*fs*Fg), but at stride s only about
// 1/s^2 of the taps land on an output position; and with fewer channels than its 64 rows, the
// rest of the tile idles. The product is the work done per useful FMA. The direct kernel does
// only useful work at about 5x the tile's time per FMA (conv2-conv5 on an H200: 4.5-5.1x), so
// past a waste of 8 it is the cheaper one. Measured there: conv1's data gradient (3 channels,
// stride 4, waste 341) took 306 ms tiled and 5.1 ms direct. Stride 1 keeps the tile: its
// waste is the rows alone, where the estimate has not been measured.
double bwd_data_tile_waste(const ConvDims& d) {
  const int64_t rows = (int64_t(d.Cg) + 63) / 64 * 64;
  return double(d.stride) * d.stride * double(rows) / d.Cg;
}
constexpr double kTileWasteLimit = 8;

// What variant 0 runs for `op` on device `dev`.
TilePlan plan_conv(ConvOp op, const ConvDims& d, int dev) {
  switch (op) {
    case ConvOp::conv_fwd:
      return plan_gemm_like(d, d.Fg, d.PN, dev);
    case ConvOp::conv_bwd_data:
      if (d.stride > 1 && bwd_data_tile_waste(d) > kTileWasteLimit) {
        TilePlan direct;
        direct.variant = 1;
        direct.why = "strided, few channels: the tile would mostly multiply zero taps";
        return direct;
      }
      return plan_gemm_like(d, d.Cg, d.HWN, dev);
    default:
      return plan_bwd_weights(d, dev, 0);
  }
}

}  // namespace

int conv_variant_count_cuda(ConvOp op) {
  switch (op) {
    case ConvOp::conv_fwd:
    case ConvOp::conv_bwd_data:
    case ConvOp::conv_bwd_weights:
      return 4;
    default:
      return sgemm_variant_count_cuda();  // FC ops run sgemm's variants (csrc/cuda/fc.cu)
  }
}

std::string conv_plan_cuda(ConvOp op, const ConvParams& p, int dev) {
  const TilePlan plan = plan_conv(op, dims_of(p), dev);
  if (plan.variant == 1)
    return "variant 1 (" + std::string(plan.why ? plan.why
                                                : "beyond the tiles: 32-bit indices, filters "
                                                  "<= 15 wide") + ")";
  return "variant " + std::to_string(plan.variant) + ": " + plan.describe();
}

void conv_fwd_cuda(const ConvParams& p, const float* x, const float* w, float* y,
                   bool accumulate, const Epilogue& epi) {
  const ConvDims d = dims_of(p);
  if (d.F == 0 || d.PN == 0) return;
  check_variant(p, "conv_fwd");
  switch (p.variant ? p.variant : plan_conv(ConvOp::conv_fwd, d, current_device()).variant) {
    case 1:
      conv_fwd_direct(d, x, w, y, accumulate, epi);
      break;
    case 2:
      conv_fwd_tiled<Tile64>(d, x, w, y, accumulate, epi);
      break;
    default:
      conv_fwd_tiled<Tile128>(d, x, w, y, accumulate, epi);
  }
}

void conv_bwd_data_cuda(const ConvParams& p, const float* dy, const float* w, float* dx,
                        bool accumulate) {
  const ConvDims d = dims_of(p);
  if (d.C == 0 || d.HWN == 0) return;
  check_variant(p, "conv_bwd_data");
  switch (p.variant ? p.variant
                    : plan_conv(ConvOp::conv_bwd_data, d, current_device()).variant) {
    case 1:
      conv_bwd_data_direct(d, dy, w, dx, accumulate);
      break;
    case 2:
      conv_bwd_data_tiled<Tile64>(d, dy, w, dx, accumulate);
      break;
    default:
      conv_bwd_data_tiled<Tile128>(d, dy, w, dx, accumulate);
  }
}

void conv_bwd_weights_cuda(const ConvParams& p, const float* x, const float* dy, float* dw,
                           bool accumulate) {
  const ConvDims d = dims_of(p);
  const int64_t count = int64_t(d.K) * d.F;
  if (count == 0) return;
  check_variant(p, "conv_bwd_weights");
  if (p.variant == 1 || d.PN == 0) {
    conv_bwd_weights_direct(d, x, dy, dw, accumulate);
    return;
  }
  const TilePlan plan = plan_bwd_weights(d, current_device(), p.variant);
  switch (plan.variant) {
    case 1:
      conv_bwd_weights_direct(d, x, dy, dw, accumulate);
      break;
    case 2:
      conv_bwd_weights_tiled<Tile64>(d, plan, x, dy, dw, accumulate);
      break;
    default:
      conv_bwd_weights_tiled<Tile128>(d, plan, x, dy, dw, accumulate);
  }
}

}  // namespace convnet
