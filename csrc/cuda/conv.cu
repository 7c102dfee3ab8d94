// Convolution on cuda-convnet's layout, and biases (declared in csrc/common/conv.h).
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
#include <algorithm>
#include <cstdint>

#include "conv.h"
#include "cuda_check.h"
#include "device.h"
#include "gemm.h"
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

// Thread per y element (grid-stride over F*P*N, n fastest).
__global__ void conv_fwd_direct_kernel(ConvDims d, const float* __restrict__ x,
                                       const float* __restrict__ w, float* __restrict__ y,
                                       bool accumulate) {
  const int64_t total = int64_t(d.F) * d.PN;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int n = int(i % d.N);
    const int64_t fp = i / d.N;
    const int ox = int(fp % d.Wo), oy = int(fp / d.Wo % d.Ho), f = int(fp / d.P);
    const int c0 = (f / d.Fg) * d.Cg;
    float sum = 0.f;
    for (int c = 0; c < d.Cg; ++c)
      for (int ky = 0; ky < d.fs; ++ky) {
        const int iy = oy * d.stride - d.pad + ky;
        if (iy < 0 || iy >= d.H) continue;
        for (int kx = 0; kx < d.fs; ++kx) {
          const int ix = ox * d.stride - d.pad + kx;
          if (ix < 0 || ix >= d.W) continue;
          sum = fmaf(w[(int64_t((c * d.fs + ky) * d.fs + kx)) * d.F + f],
                     x[(int64_t((c0 + c) * d.H + iy) * d.W + ix) * d.N + n], sum);
        }
      }
    y[i] = accumulate ? y[i] + sum : sum;
  }
}

// Thread per dx element (grid-stride over C*H*W*N, n fastest): the transposed convolution,
// gathering the outputs whose windows cover pixel (iy, ix) — no atomics.
__global__ void conv_bwd_data_direct_kernel(ConvDims d, const float* __restrict__ dy,
                                            const float* __restrict__ w, float* __restrict__ dx,
                                            bool accumulate) {
  const int64_t total = int64_t(d.C) * d.HWN;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int n = int(i % d.N);
    const int64_t cp = i / d.N;
    const int ix = int(cp % d.W), iy = int(cp / d.W % d.H), c = int(cp / (int64_t(d.H) * d.W));
    const int g = c / d.Cg, cl = c % d.Cg;
    float sum = 0.f;
    for (int ky = 0; ky < d.fs; ++ky) {
      const int ty = iy + d.pad - ky;  // = oy * stride for the output that reads iy at tap ky
      if (ty < 0 || ty % d.stride != 0 || ty / d.stride >= d.Ho) continue;
      const int oy = ty / d.stride;
      for (int kx = 0; kx < d.fs; ++kx) {
        const int tx = ix + d.pad - kx;
        if (tx < 0 || tx % d.stride != 0 || tx / d.stride >= d.Wo) continue;
        const int ox = tx / d.stride;
        const float* wk = w + int64_t((cl * d.fs + ky) * d.fs + kx) * d.F + g * d.Fg;
        const float* dyp = dy + (int64_t(g) * d.Fg * d.P + int64_t(oy) * d.Wo + ox) * d.N + n;
        for (int f = 0; f < d.Fg; ++f) sum = fmaf(wk[f], dyp[f * d.PN], sum);
      }
    }
    dx[i] = accumulate ? dx[i] + sum : sum;
  }
}

// Thread per dw element (grid-stride over K*F, filter fastest), summing over positions and images.
__global__ void conv_bwd_weights_direct_kernel(ConvDims d, const float* __restrict__ x,
                                               const float* __restrict__ dy,
                                               float* __restrict__ dw, bool accumulate) {
  const int64_t total = int64_t(d.K) * d.F;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int f = int(i % d.F), k = int(i / d.F);
    const int c = k / d.taps, ky = k % d.taps / d.fs, kx = k % d.fs;
    const float* xc = x + int64_t((f / d.Fg) * d.Cg + c) * d.HWN;
    const float* dyf = dy + int64_t(f) * d.PN;
    float sum = 0.f;
    for (int oy = 0; oy < d.Ho; ++oy) {
      const int iy = oy * d.stride - d.pad + ky;
      if (iy < 0 || iy >= d.H) continue;
      for (int ox = 0; ox < d.Wo; ++ox) {
        const int ix = ox * d.stride - d.pad + kx;
        if (ix < 0 || ix >= d.W) continue;
        const float* xp = xc + (int64_t(iy) * d.W + ix) * d.N;
        const float* dyp = dyf + (int64_t(oy) * d.Wo + ox) * d.N;
        for (int n = 0; n < d.N; ++n) sum = fmaf(xp[n], dyp[n], sum);
      }
    }
    dw[i] = accumulate ? dw[i] + sum : sum;
  }
}

// ======================= variant 2: implicit GEMM =================================================

using Tile64 = TileShape<64, 64, 16, 4, 4>;
using Tile128 = TileShape<128, 128, 8, 8, 8>;

// fwd, operand B: patches (K, P*N), element (k, col = p*N + n) = x[c, oy*s - pad + ky, ...].
// A thread always loads the same column (tid % BN) at rows tid / BN + e * (threads / BN), so the
// column's position is decoded once. Consecutive threads take consecutive images: coalesced.
template <class S>
struct PatchColumnsLoader {
  static constexpr int BN = S::kBN, kStep = S::kThreads / BN;
  static constexpr int kRegs = S::kBK * BN / S::kThreads;
  static_assert(S::kThreads % BN == 0, "whole rows per pass");
  const ConvDims& d;
  const float* x;  // first channel of the group, this thread's image
  int iy0, ix0;    // top-left corner of the column's window (may be negative)
  bool valid;

  __device__ __forceinline__ PatchColumnsLoader(const ConvDims& dd, const float* xg, int64_t col0)
      : d(dd) {
    const int64_t col = col0 + int(threadIdx.x) % BN;
    valid = col < d.PN;
    const int64_t p = valid ? col / d.N : 0;
    x = xg + (valid ? col % d.N : 0);
    iy0 = int(p / d.Wo) * d.stride - d.pad;
    ix0 = int(p % d.Wo) * d.stride - d.pad;
  }
  __device__ __forceinline__ void fetch(int64_t k0, int64_t k_end, float* r) const {
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int k = int(k0) + int(threadIdx.x) / BN + e * kStep;
      float v = 0.f;
      if (valid && k < k_end) {
        const int c = k / d.taps, t = k % d.taps;
        const int iy = iy0 + t / d.fs, ix = ix0 + t % d.fs;
        if (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W)
          v = x[(int64_t(c * d.H + iy) * d.W + ix) * d.N];
      }
      r[e] = v;
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
__global__ void __launch_bounds__(S::kThreads)
    conv_fwd_tile_kernel(ConvDims d, const float* __restrict__ x, const float* __restrict__ w,
                         float* __restrict__ y, bool accumulate, bool vec_w, bool vec_y) {
  const int g = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.y) * S::kBM, n0 = int64_t(blockIdx.x) * S::kBN;
  // w_g^T: element (f, k) at w[k*F + g*Fg + f], contiguous along f.
  const MatrixLoader<S, S::kBM, true> la{w + int64_t(g) * d.Fg, d.F, d.Fg, m0, vec_w};
  const PatchColumnsLoader<S> lb(d, x + int64_t(g) * d.Cg * d.HWN, n0);
  float acc[S::kTM][S::kTN];
  tile_gemm<S>(la, lb, 0, d.K, acc);
  tile_store<S>(acc, y + int64_t(g) * d.Fg * d.PN, d.PN, d.Fg, d.PN, m0, n0, 1.f,
                accumulate ? 1.f : 0.f, vec_y);
}

// bwd_data, operand A: w_g (Cg, fs*fs*Fg), element (c, r = t*Fg + f) = w[c, t, g*Fg + f].
// Thread reads reduction index tid % BK (consecutive filters: coalesced) for rows
// tid / BK + e * (threads / BK).
template <class S>
struct WeightTapsLoader {
  static constexpr int BK = S::kBK, BM = S::kBM, kStep = S::kThreads / BK;
  static constexpr int kRegs = BK * BM / S::kThreads;
  const ConvDims& d;
  const float* w;  // w + g*Fg
  int64_t c0;
  __device__ __forceinline__ void fetch(int64_t k0, int64_t k_end, float* r) const {
    const int64_t rr = k0 + int(threadIdx.x) % BK;
    const int t = int(rr / d.Fg), f = int(rr % d.Fg);
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int64_t c = c0 + int(threadIdx.x) / BK + e * kStep;
      r[e] = (rr < k_end && c < d.Cg) ? w[(c * d.taps + t) * d.F + f] : 0.f;
    }
  }
  __device__ __forceinline__ void stash(const float* r, float* tile) const {
#pragma unroll
    for (int e = 0; e < kRegs; ++e)
      tile[(int(threadIdx.x) % BK) * S::pitch(BM) + int(threadIdx.x) / BK + e * kStep] = r[e];
  }
};

// bwd_data, operand B: dy taps (fs*fs*Fg, H*W*N), element (r = t*Fg + f, col = pixel*N + n) =
// dy[g*Fg + f, oy, ox, n] when tap t = (ky, kx) of output (oy, ox) lands on the pixel, else 0.
// A thread keeps one column (its pixel decoded once), as PatchColumnsLoader.
template <class S>
struct DyTapsLoader {
  static constexpr int BN = S::kBN, kStep = S::kThreads / BN;
  static constexpr int kRegs = S::kBK * BN / S::kThreads;
  const ConvDims& d;
  const float* dy;  // first filter of the group, this thread's image
  int iyp, ixp;     // pixel + padding: = oy*stride + ky for every output that reads it
  bool valid;

  __device__ __forceinline__ DyTapsLoader(const ConvDims& dd, const float* dyg, int64_t col0)
      : d(dd) {
    const int64_t col = col0 + int(threadIdx.x) % BN;
    valid = col < d.HWN;
    const int64_t pix = valid ? col / d.N : 0;
    dy = dyg + (valid ? col % d.N : 0);
    iyp = int(pix / d.W) + d.pad;
    ixp = int(pix % d.W) + d.pad;
  }
  __device__ __forceinline__ void fetch(int64_t k0, int64_t k_end, float* r) const {
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int64_t rr = k0 + int(threadIdx.x) / BN + e * kStep;
      float v = 0.f;
      if (valid && rr < k_end) {
        const int t = int(rr / d.Fg), f = int(rr % d.Fg);
        const int ty = iyp - t / d.fs, tx = ixp - t % d.fs;
        if (ty >= 0 && tx >= 0 && ty % d.stride == 0 && tx % d.stride == 0) {
          const int oy = ty / d.stride, ox = tx / d.stride;
          if (oy < d.Ho && ox < d.Wo) v = dy[f * d.PN + (int64_t(oy) * d.Wo + ox) * d.N];
        }
      }
      r[e] = v;
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
__global__ void __launch_bounds__(S::kThreads)
    conv_bwd_data_tile_kernel(ConvDims d, const float* __restrict__ dy,
                              const float* __restrict__ w, float* __restrict__ dx,
                              bool accumulate, bool vec_dx) {
  const int g = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.y) * S::kBM, n0 = int64_t(blockIdx.x) * S::kBN;
  const WeightTapsLoader<S> la{d, w + int64_t(g) * d.Fg, m0};
  const DyTapsLoader<S> lb(d, dy + int64_t(g) * d.Fg * d.PN, n0);
  float acc[S::kTM][S::kTN];
  tile_gemm<S>(la, lb, 0, int64_t(d.taps) * d.Fg, acc);
  tile_store<S>(acc, dx + int64_t(g) * d.Cg * d.HWN, d.HWN, d.Cg, d.HWN, m0, n0, 1.f,
                accumulate ? 1.f : 0.f, vec_dx);
}

// bwd_weights, operand A: patches (K, P*N), element (k, r = p*N + n). A thread reads reduction
// index tid % BK (consecutive images: coalesced) for the fixed taps tid / BK + e * (threads / BK),
// whose (channel, ky, kx) are decoded once.
template <class S>
struct PatchRowsLoader {
  static constexpr int BK = S::kBK, BM = S::kBM, kStep = S::kThreads / BK;
  static constexpr int kRegs = BK * BM / S::kThreads;
  const ConvDims& d;
  const float* x;          // first channel of the group
  int coff[kRegs];         // channel * H * W, or -1 past the last tap
  int ky[kRegs], kx[kRegs];

  __device__ __forceinline__ PatchRowsLoader(const ConvDims& dd, const float* xg, int64_t k0)
      : d(dd), x(xg) {
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int k = int(k0) + int(threadIdx.x) / BK + e * kStep;
      coff[e] = k < d.K ? (k / d.taps) * d.H * d.W : -1;
      ky[e] = k % d.taps / d.fs;
      kx[e] = k % d.fs;
    }
  }
  __device__ __forceinline__ void fetch(int64_t r0, int64_t r_end, float* r) const {
    const int64_t rr = r0 + int(threadIdx.x) % BK;
    const bool in = rr < r_end;
    const int n = in ? int(rr % d.N) : 0;
    const int64_t p = in ? rr / d.N : 0;
    const int iy0 = int(p / d.Wo) * d.stride - d.pad, ix0 = int(p % d.Wo) * d.stride - d.pad;
#pragma unroll
    for (int e = 0; e < kRegs; ++e) {
      const int iy = iy0 + ky[e], ix = ix0 + kx[e];
      r[e] = (in && coff[e] >= 0 && iy >= 0 && iy < d.H && ix >= 0 && ix < d.W)
                 ? x[(int64_t(coff[e]) + iy * d.W + ix) * d.N + n]
                 : 0.f;
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
__global__ void __launch_bounds__(S::kThreads)
    conv_bwd_weights_tile_kernel(ConvDims d, const float* __restrict__ x,
                                 const float* __restrict__ dy, float* __restrict__ out,
                                 int splits, int64_t chunk, float beta, bool vec_dy,
                                 bool vec_out) {
  const int g = blockIdx.z / splits, s = blockIdx.z % splits;
  const int64_t m0 = int64_t(blockIdx.y) * S::kBM, n0 = int64_t(blockIdx.x) * S::kBN;
  const PatchRowsLoader<S> la(d, x + int64_t(g) * d.Cg * d.HWN, m0);
  // dy_g^T: element (r, f) at dy[(g*Fg + f)*P*N + r], contiguous along r.
  const MatrixLoader<S, S::kBN, false> lb{dy + int64_t(g) * d.Fg * d.PN, d.PN, d.Fg, n0, vec_dy};
  const int64_t r0 = s * chunk, r1 = r0 + chunk < d.PN ? r0 + chunk : d.PN;
  float acc[S::kTM][S::kTN];
  tile_gemm<S>(la, lb, r0, r1, acc);
  tile_store<S>(acc, out + s * int64_t(d.K) * d.F + int64_t(g) * d.Fg, d.F, d.K, d.Fg, m0, n0,
                1.f, beta, vec_out);
}

// dw[i] (+)= sum over s of part[s*count + i], s in increasing order: the same bits every run.
__global__ void sum_partials_kernel(const float* __restrict__ part, float* __restrict__ dw,
                                    int64_t count, int splits, bool accumulate) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += part[s * count + i];
    dw[i] = accumulate ? dw[i] + sum : sum;
  }
}

// ======================= biases ===================================================================

// y (F, per) += b: blocks (x over a filter's elements, y over filters).
__global__ void bias_fwd_kernel(float* __restrict__ y, const float* __restrict__ b, int64_t filters,
                                int64_t per) {
  for (int64_t f = blockIdx.y; f < filters; f += gridDim.y) {
    const float bf = b[f];
    float* row = y + f * per;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < per;
         i += int64_t(gridDim.x) * blockDim.x)
      row[i] += bf;
  }
}

// db[f] (+)= sum of dy row f: one block per filter, each thread a strided partial sum, then a
// shared-memory tree; fixed order, so deterministic.
constexpr int kBiasThreads = 256;
__global__ void __launch_bounds__(kBiasThreads)
    bias_bwd_kernel(const float* __restrict__ dy, float* __restrict__ db, int64_t filters,
                    int64_t per, bool accumulate) {
  __shared__ float part[kBiasThreads];
  for (int64_t f = blockIdx.x; f < filters; f += gridDim.x) {
    const float* row = dy + f * per;
    float sum = 0.f;
    for (int64_t i = threadIdx.x; i < per; i += kBiasThreads) sum += row[i];
    part[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kBiasThreads / 2; half > 0; half /= 2) {
      if (int(threadIdx.x) < half) part[threadIdx.x] += part[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) db[f] = accumulate ? db[f] + part[0] : part[0];
    __syncthreads();  // part[] is rewritten for the next filter
  }
}

// ======================= launchers ================================================================

// The variant to run: 1, 2 or 3. For 0, the 128x128 tile when the GEMM's rows (per group) fill
// most of it and there are enough tiles to occupy a GPU, else the 64x64 one. (A shape rule, not a
// table tuned on hardware: none was available.)
int resolve_variant(const ConvParams& p, const char* op, int64_t rows, bool enough_tiles) {
  CONVNET_CHECK(p.variant >= 0 && p.variant <= 3,
                op << ": variant " << p.variant << " does not exist (0..3)");
  if (p.variant != 0) return p.variant;
  return rows >= 96 && enough_tiles ? 3 : 2;
}

// At least 64 tiles of 128x128 in a (rows, cols) GEMM per group.
bool enough_tiles128(int64_t rows, int64_t cols, int groups) {
  return ((rows + 127) / 128) * ((cols + 127) / 128) * groups >= 64;
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

template <class S>
void conv_fwd_tiled(const ConvDims& d, const float* x, const float* w, float* y, bool accumulate) {
  const bool vec_w = groups_aligned(w, d.Fg, d.F, d.groups);
  const bool vec_y = groups_aligned(y, int64_t(d.Fg) * d.PN, d.PN, d.groups);
  CONVNET_LAUNCH(conv_fwd_tile_kernel<S>, tile_grid<S>(d.PN, d.Fg, d.groups, "conv_fwd"),
                 S::kThreads, 0, current_stream(), d, x, w, y, accumulate, vec_w, vec_y);
}

template <class S>
void conv_bwd_data_tiled(const ConvDims& d, const float* dy, const float* w, float* dx,
                         bool accumulate) {
  const bool vec_dx = groups_aligned(dx, int64_t(d.Cg) * d.HWN, d.HWN, d.groups);
  CONVNET_LAUNCH(conv_bwd_data_tile_kernel<S>,
                 tile_grid<S>(d.HWN, d.Cg, d.groups, "conv_bwd_data"), S::kThreads, 0,
                 current_stream(), d, dy, w, dx, accumulate, vec_dx);
}

template <class S>
void conv_bwd_weights_tiled(const ConvDims& d, const float* x, const float* dy, float* dw,
                            bool accumulate) {
  // Split the P*N reduction until there are ~256 blocks, keeping >= 8 K steps per chunk. The
  // split depends on the shapes only, so a given problem always sums in the same order.
  const int64_t count = int64_t(d.K) * d.F;
  const int64_t tiles = ((d.K + S::kBM - 1) / S::kBM) * ((d.Fg + S::kBN - 1) / S::kBN) * d.groups;
  const int64_t min_chunk = 8 * S::kBK;
  int64_t splits = std::max<int64_t>(1, std::min((256 + tiles - 1) / tiles,
                                                 (d.PN + min_chunk - 1) / min_chunk));
  splits = std::min<int64_t>(splits, 65535 / d.groups);
  int64_t chunk = (d.PN + splits - 1) / splits;
  chunk = std::max<int64_t>(S::kBK, (chunk + S::kBK - 1) / S::kBK * S::kBK);
  splits = std::max<int64_t>(1, (d.PN + chunk - 1) / chunk);

  cudaStream_t s = current_stream();
  const bool vec_dy = groups_aligned(dy, int64_t(d.Fg) * d.PN, d.PN, d.groups);
  const dim3 grid = tile_grid<S>(d.Fg, d.K, d.groups * splits, "conv_bwd_weights");
  if (splits == 1) {
    CONVNET_LAUNCH(conv_bwd_weights_tile_kernel<S>, grid, S::kThreads, 0, s, d, x, dy, dw, 1,
                   chunk, accumulate ? 1.f : 0.f, vec_dy, groups_aligned(dw, d.Fg, d.F, d.groups));
    return;
  }
  // Freed blocks are only reused by later work on this device's one stream: safe while queued.
  DeviceBuffer partials(size_t(splits * count) * sizeof(float), current_device());
  float* part = partials.as<float>();
  CONVNET_LAUNCH(conv_bwd_weights_tile_kernel<S>, grid, S::kThreads, 0, s, d, x, dy, part,
                 int(splits), chunk, 0.f, vec_dy, groups_aligned(part, d.Fg, d.F, d.groups));
  CONVNET_LAUNCH(sum_partials_kernel, grid_for(count, 256), 256, 0, s, part, dw, count,
                 int(splits), accumulate);
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

void conv_fwd_cuda(const ConvParams& p, const float* x, const float* w, float* y,
                   bool accumulate) {
  const ConvDims d = dims_of(p);
  if (d.F == 0 || d.PN == 0) return;
  switch (resolve_variant(p, "conv_fwd", d.Fg, enough_tiles128(d.Fg, d.PN, d.groups))) {
    case 1:
      CONVNET_LAUNCH(conv_fwd_direct_kernel, grid_for(int64_t(d.F) * d.PN, 256), 256, 0,
                     current_stream(), d, x, w, y, accumulate);
      break;
    case 2:
      conv_fwd_tiled<Tile64>(d, x, w, y, accumulate);
      break;
    default:
      conv_fwd_tiled<Tile128>(d, x, w, y, accumulate);
  }
}

void conv_bwd_data_cuda(const ConvParams& p, const float* dy, const float* w, float* dx,
                        bool accumulate) {
  const ConvDims d = dims_of(p);
  if (d.C == 0 || d.HWN == 0) return;
  switch (resolve_variant(p, "conv_bwd_data", d.Cg,
                          enough_tiles128(d.Cg, d.HWN, d.groups))) {
    case 1:
      CONVNET_LAUNCH(conv_bwd_data_direct_kernel, grid_for(int64_t(d.C) * d.HWN, 256), 256, 0,
                     current_stream(), d, dy, w, dx, accumulate);
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
  // Rows = filter taps; splitting the reduction makes up for few tiles.
  switch (resolve_variant(p, "conv_bwd_weights", d.K, true)) {
    case 1:
      CONVNET_LAUNCH(conv_bwd_weights_direct_kernel, grid_for(count, 256), 256, 0,
                     current_stream(), d, x, dy, dw, accumulate);
      break;
    case 2:
      conv_bwd_weights_tiled<Tile64>(d, x, dy, dw, accumulate);
      break;
    default:
      conv_bwd_weights_tiled<Tile128>(d, x, dy, dw, accumulate);
  }
}

void bias_fwd_cuda(float* y, const float* b, int64_t filters, int64_t per_filter) {
  if (filters == 0 || per_filter == 0) return;
  const dim3 grid{grid_for(per_filter, 256, 64), unsigned(std::min<int64_t>(filters, 65535))};
  CONVNET_LAUNCH(bias_fwd_kernel, grid, 256, 0, current_stream(), y, b, filters, per_filter);
}

void bias_bwd_cuda(const float* dy, float* db, int64_t filters, int64_t per_filter,
                   bool accumulate) {
  if (filters == 0) return;
  CONVNET_LAUNCH(bias_bwd_kernel, unsigned(std::min<int64_t>(filters, 65535)), kBiasThreads, 0,
                 current_stream(), dy, db, filters, per_filter, accumulate);
}

}  // namespace convnet
