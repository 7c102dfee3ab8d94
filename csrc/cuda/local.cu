// Locally-connected layers (declared in csrc/common/local.h): a convolution with its own filters
// at every output position.
//   x : (C, H, W, N)    w : (Ho, Wo, C/groups, fs, fs, F)    y : (F, Ho, Wo, N)
// Names: Cg = C/groups, Fg = F/groups, P = Ho*Wo, K = Cg*fs*fs taps per group; tap
// k = (c*fs + ky)*fs + kx numbers a row of one position's filters w_p (K, F). Pixels outside the
// image (padding, the round-up overhang) read as zero.
//
// Variants (ConvParams::variant; 0 = 2 where an op has it, else 1):
//   1  direct: one thread per output element, summing straight from global memory (images
//      across a warp, so image reads coalesce and filter reads are warp-wide broadcasts).
//      fwd and bwd_weights are the readable references; bwd_data gathers, for each input
//      pixel, the outputs whose windows cover it (a range per axis; no atomics), and is
//      variant 0 too.
//   2  per-position GEMM tiles (fwd, bwd_weights): a 256-thread block computes a 32x32 tile of
//      one position's GEMM, staging 32-deep slices of both operands in shared memory (padded
//      rows: no bank conflicts), 4 outputs per thread:
//        fwd          y_p,g  (Fg, N) = w_p,g^T (Fg, K) . patch_p,g (K, N)   tile: 32 filters x
//                                                                          32 images
//        bwd_weights  dw_p,g (K, Fg) = patch_p,g (K, N) . dy_p,g^T (N, Fg)  tile: 32 taps x
//                                                                          32 filters
//      The patch is gathered from x while staging (never stored). bwd_weights reduces over the
//      images in a fixed order within one thread: deterministic, no atomics.
#include <algorithm>
#include <cstdint>

#include "cuda_check.h"
#include "fast_div.cuh"
#include "index_width.cuh"
#include "local.h"
#include "pixel_grid.h"
#include "shape.h"

namespace convnet {
namespace {

// The shapes a kernel needs, derived once on the host.
struct LocalDims {
  int C, H, W, N, F, fs, pad, stride, groups, Ho, Wo, Cg, Fg, K;
  int64_t P, PN, HWN;
};

// Decoders of a tap, a position and a filter, passed beside LocalDims only to the kernels that
// decode (folded into LocalDims, they cost the data gradient 24 registers on sm_80).
struct LocalDivs {
  FastDiv by_taps, by_fs, by_Wo, by_K, by_Fg;
  // Empty shapes return before any launch; their divisors are never used.
  explicit LocalDivs(const LocalDims& d)
      : by_taps(std::max(1, d.fs * d.fs)), by_fs(std::max(1, d.fs)), by_Wo(std::max(1, d.Wo)),
        by_K(std::max(1, d.K)), by_Fg(std::max(1, d.Fg)) {}
};

LocalDims dims_of(const ConvParams& p) {
  LocalDims d;
  d.C = p.channels, d.H = p.height, d.W = p.width, d.N = p.images;
  d.F = p.filters, d.fs = p.filter_size, d.pad = p.padding, d.stride = p.stride;
  d.groups = p.groups, d.Ho = p.out_h, d.Wo = p.out_w;
  d.Cg = d.C / d.groups, d.Fg = d.F / d.groups, d.K = d.Cg * d.fs * d.fs;
  d.P = int64_t(d.Ho) * d.Wo, d.PN = d.P * d.N, d.HWN = int64_t(d.H) * d.W * d.N;
  return d;
}

// x[c, iy, ix, n] for tap k of output position (oy, ox), channels counted from c0; 0 outside.
// I: the kernels' index type (index_width.cuh; local_span bounds every offset).
template <class I>
__device__ __forceinline__ float patch_at(const LocalDims& d, const LocalDivs& v, const float* x,
                                          int c0, int oy, int ox, int k, int n) {
  const int c = v.by_taps.div(k), t = k - c * d.fs * d.fs;
  const int ky = v.by_fs.div(t), kx = t - ky * d.fs;
  const int iy = oy * d.stride - d.pad + ky, ix = ox * d.stride - d.pad + kx;
  if (iy < 0 || iy >= d.H || ix < 0 || ix >= d.W) return 0.f;
  return x[((I(c0 + c) * d.H + iy) * d.W + ix) * d.N + n];
}

// ======================= variant 1: direct =======================================================

// Forward and data gradient (pixel_grid.h): one thread per (pixel, image), blockIdx.x the pixel, the
// images over blockIdx.y x threadIdx.x, so a warp reads 32 consecutive floats.

// Pixel (f, oy, ox) of y: the position's filter f over the window.
template <class I>
__global__ void local_fwd_direct_kernel(LocalDims d, LocalDivs v, const float* __restrict__ x,
                                        const float* __restrict__ w, float* __restrict__ y,
                                        bool accumulate) {
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n >= d.N) return;
  const I pix = blockIdx.x;  // f * P + pos
  const int f = int(pix / I(d.P)), pos = int(pix - I(f) * I(d.P));  // block-uniform
  const int oy = v.by_Wo.div(pos), ox = pos - oy * d.Wo, c0 = v.by_Fg.div(f) * d.Cg;
  I wp = I(pos) * d.K * d.F + f;
  float sum = 0.f;
  for (int k = 0; k < d.K; ++k, wp += d.F)
    sum = fmaf(w[wp], patch_at<I>(d, v, x, c0, oy, ox, k, n), sum);
  float* out = y + (pix * d.N + n);
  *out = accumulate ? *out + sum : sum;
}

// Pixel (c, iy, ix) of dx: sums, over the output positions whose windows cover it, that
// position's filters times dy (a gather: no atomics).
template <class I>
__global__ void local_bwd_data_direct_kernel(LocalDims d, const float* __restrict__ dy,
                                             const float* __restrict__ w, float* __restrict__ dx,
                                             bool accumulate) {
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n >= d.N) return;
  const I pix = blockIdx.x;  // (c * H + iy) * W + ix
  const int c = int(pix / (I(d.H) * d.W)), iy = int(pix / d.W % d.H), ix = int(pix % d.W);
  const int g = c / d.Cg, cl = c % d.Cg;
  // Outputs o whose window o*stride - pad .. + fs - 1 holds the pixel, per axis.
  const int oy0 = max(0, int(ceil_div(iy + d.pad - d.fs + 1, d.stride)));
  const int oy1 = min(d.Ho - 1, (iy + d.pad) / d.stride);
  const int ox0 = max(0, int(ceil_div(ix + d.pad - d.fs + 1, d.stride)));
  const int ox1 = min(d.Wo - 1, (ix + d.pad) / d.stride);
  float sum = 0.f;
  for (int oy = oy0; oy <= oy1; ++oy)
    for (int ox = ox0; ox <= ox1; ++ox) {
      const I pos = I(oy) * d.Wo + ox;
      const int tap = (cl * d.fs + iy + d.pad - oy * d.stride) * d.fs + ix + d.pad - ox * d.stride;
      I wt = (pos * d.K + tap) * d.F + g * d.Fg;
      I dyp = (I(g) * d.Fg * d.P + pos) * d.N + n;
      for (int f = 0; f < d.Fg; ++f, ++wt, dyp += I(d.PN)) sum = fmaf(w[wt], dy[dyp], sum);
    }
  float* out = dx + (pix * d.N + n);
  *out = accumulate ? *out + sum : sum;
}

// Pixel (pos, k) of dw (P, K, F), the filters over the threads (pixel_grid.h: dw's writes
// coalesce), summing over the images.
template <class I>
__global__ void local_bwd_weights_direct_kernel(LocalDims d, LocalDivs v,
                                                const float* __restrict__ x,
                                                const float* __restrict__ dy,
                                                float* __restrict__ dw, bool accumulate) {
  const int f = blockIdx.y * blockDim.x + threadIdx.x;
  if (f >= d.F) return;
  const int pix = blockIdx.x;  // pos * K + k
  const int pos = v.by_K.div(pix), k = pix - pos * d.K;
  const int oy = v.by_Wo.div(pos), ox = pos - oy * d.Wo, c0 = v.by_Fg.div(f) * d.Cg;
  const I dyp = I(f) * I(d.PN) + I(pos) * d.N;
  float sum = 0.f;
  for (int n = 0; n < d.N; ++n) sum = fmaf(patch_at<I>(d, v, x, c0, oy, ox, k, n), dy[dyp + n], sum);
  float* out = dw + (I(pix) * d.F + f);
  *out = accumulate ? *out + sum : sum;
}

// ======================= variant 2: per-position GEMM tiles ======================================

constexpr int kTile = 32, kRows = 8, kThreads = kTile * kRows;  // 4 outputs per thread
using Staged = float[kTile][kTile + 1];  // a 32-step slice of an operand, rows padded

// acc[j] += sum over the staged steps s of a[s][ty + 8j] * b[s][tx]: a is read as a broadcast
// (one row per warp), b by consecutive threads.
__device__ __forceinline__ void tile_fma(const Staged& a, const Staged& b, int tx, int ty,
                                         float* acc) {
  for (int s = 0; s < kTile; ++s) {
    const float bv = b[s][tx];
    for (int j = 0; j < kTile / kRows; ++j) acc[j] = fmaf(a[s][ty + kRows * j], bv, acc[j]);
  }
}

// Block (tile, pos, g) with tile = image tile + tiles_n * filter tile. Thread (tx, ty) computes
// filters f0 + ty + 8j (j < 4) for image n0 + tx.
template <class I>
__global__ void __launch_bounds__(kThreads)
    local_fwd_tile_kernel(LocalDims d, LocalDivs v, const float* __restrict__ x,
                          const float* __restrict__ w,
                          float* __restrict__ y, bool accumulate) {
  __shared__ Staged ws;  // (k, f)
  __shared__ Staged xs;  // (k, n)
  const int tx = int(threadIdx.x) % kTile, ty = int(threadIdx.x) / kTile;
  const int tiles_n = (d.N + kTile - 1) / kTile;
  const int n0 = int(blockIdx.x) % tiles_n * kTile, f0 = int(blockIdx.x) / tiles_n * kTile;
  const int pos = int(blockIdx.y), g = int(blockIdx.z);
  const int oy = v.by_Wo.div(pos), ox = pos - oy * d.Wo, n = n0 + tx;
  const I wp = I(pos) * d.K * d.F + g * d.Fg + f0 + tx;
  float acc[kTile / kRows] = {};
  for (int k0 = 0; k0 < d.K; k0 += kTile) {
    for (int j = 0; j < kTile / kRows; ++j) {
      const int r = ty + kRows * j, k = k0 + r;
      ws[r][tx] = k < d.K && f0 + tx < d.Fg ? w[wp + I(k) * d.F] : 0.f;
      xs[r][tx] = k < d.K && n < d.N ? patch_at<I>(d, v, x, g * d.Cg, oy, ox, k, n) : 0.f;
    }
    __syncthreads();
    tile_fma(ws, xs, tx, ty, acc);
    __syncthreads();
  }
  for (int j = 0; j < kTile / kRows; ++j) {
    const int f = f0 + ty + kRows * j;
    if (f >= d.Fg || n >= d.N) continue;
    float* out = y + ((I(g * d.Fg + f) * d.P + pos) * d.N + n);
    *out = accumulate ? *out + acc[j] : acc[j];
  }
}

// Block (tile, pos, g) with tile = filter tile + tiles_f * tap tile. Thread (tx, ty) computes
// taps k0 + ty + 8j (j < 4) for filter f0 + tx, summing over the images 32 at a time.
template <class I>
__global__ void __launch_bounds__(kThreads)
    local_bwd_weights_tile_kernel(LocalDims d, LocalDivs v, const float* __restrict__ x,
                                  const float* __restrict__ dy, float* __restrict__ dw,
                                  bool accumulate) {
  __shared__ Staged ps;  // (n, k)
  __shared__ Staged ds;  // (n, f)
  const int tx = int(threadIdx.x) % kTile, ty = int(threadIdx.x) / kTile;
  const int tiles_f = (d.Fg + kTile - 1) / kTile;
  const int f0 = int(blockIdx.x) % tiles_f * kTile, k0 = int(blockIdx.x) / tiles_f * kTile;
  const int pos = int(blockIdx.y), g = int(blockIdx.z);
  const int oy = v.by_Wo.div(pos), ox = pos - oy * d.Wo;
  const I dyp = (I(g) * d.Fg * d.P + pos) * d.N;
  float acc[kTile / kRows] = {};
  for (int n0 = 0; n0 < d.N; n0 += kTile) {
    const int n = n0 + tx;
    for (int j = 0; j < kTile / kRows; ++j) {
      const int r = ty + kRows * j;  // a tap for ps, a filter for ds; the image is n
      ps[tx][r] =
          k0 + r < d.K && n < d.N ? patch_at<I>(d, v, x, g * d.Cg, oy, ox, k0 + r, n) : 0.f;
      ds[tx][r] = f0 + r < d.Fg && n < d.N ? dy[dyp + I(f0 + r) * I(d.PN) + n] : 0.f;
    }
    __syncthreads();
    tile_fma(ps, ds, tx, ty, acc);
    __syncthreads();
  }
  for (int j = 0; j < kTile / kRows; ++j) {
    const int k = k0 + ty + kRows * j, f = f0 + tx;
    if (k >= d.K || f >= d.Fg) continue;
    float* out = dw + ((I(pos) * d.K + k) * d.F + g * d.Fg + f);
    *out = accumulate ? *out + acc[j] : acc[j];
  }
}

// Grid of the tile kernels: (tiles, positions, groups), each dimension within CUDA's limits.
dim3 tile_grid(int64_t tiles, const LocalDims& d, const char* op) {
  CONVNET_CHECK(tiles < (int64_t(1) << 31) && d.P <= 65535 && d.groups <= 65535,
                op << ": " << d.P << " output positions x " << d.groups << " groups x " << tiles
                   << " tiles exceed the grid (at most 65535 positions and groups)");
  return dim3(unsigned(tiles), unsigned(d.P), unsigned(d.groups));
}

int tiles(int n) { return (n + kTile - 1) / kTile; }

// Every offset a local kernel forms lies inside x (C*H*W*N), w and dw (P*K*F) or y and dy
// (F*P*N): the largest of the three.
int64_t local_span(const LocalDims& d) {
  return std::max({int64_t(d.C) * d.HWN, d.P * d.K * d.F, int64_t(d.F) * d.PN});
}

void check_variant(const ConvParams& p, LocalOp op, const char* name) {
  const int count = local_variant_count_cuda(op);
  CONVNET_CHECK(p.variant >= 0 && p.variant < count,
                name << ": variant " << p.variant << " does not exist (0.." << count - 1 << ")");
}

}  // namespace

int local_variant_count_cuda(LocalOp op) { return op == LocalOp::local_bwd_data ? 2 : 3; }

void local_fwd_cuda(const ConvParams& p, const float* x, const float* w, float* y,
                    bool accumulate) {
  check_variant(p, LocalOp::local_fwd, "local_fwd");
  const LocalDims d = dims_of(p);
  if (d.F == 0 || d.PN == 0) return;
  if (p.variant == 1) {
    const PixelGrid g = pixel_grid(int64_t(d.F) * d.P, d.N, "local_fwd variant 1");
    with_index(local_span(d), [&](auto index) {
      CONVNET_LAUNCH((local_fwd_direct_kernel<decltype(index)>), g.grid, g.block, 0,
                     current_stream(), d, LocalDivs(d), x, w, y, accumulate);
    });
    return;
  }
  const dim3 grid = tile_grid(int64_t(tiles(d.N)) * tiles(d.Fg), d, "local_fwd");
  with_index(local_span(d), [&](auto index) {
    CONVNET_LAUNCH((local_fwd_tile_kernel<decltype(index)>), grid, kThreads, 0,
                   current_stream(), d, LocalDivs(d), x, w, y, accumulate);
  });
}

void local_bwd_data_cuda(const ConvParams& p, const float* dy, const float* w, float* dx,
                         bool accumulate) {
  check_variant(p, LocalOp::local_bwd_data, "local_bwd_data");
  const LocalDims d = dims_of(p);
  if (d.C == 0 || d.HWN == 0) return;
  const PixelGrid g = pixel_grid(int64_t(d.C) * d.H * d.W, d.N, "local_bwd_data");
  with_index(local_span(d), [&](auto index) {
    CONVNET_LAUNCH((local_bwd_data_direct_kernel<decltype(index)>), g.grid, g.block, 0,
                   current_stream(), d, dy, w, dx, accumulate);
  });
}

void local_bwd_weights_cuda(const ConvParams& p, const float* x, const float* dy, float* dw,
                            bool accumulate) {
  check_variant(p, LocalOp::local_bwd_weights, "local_bwd_weights");
  const LocalDims d = dims_of(p);
  const int64_t count = d.P * d.K * d.F;
  if (count == 0) return;
  if (p.variant == 1) {
    const PixelGrid g = pixel_grid(d.P * d.K, d.F, "local_bwd_weights variant 1");
    with_index(local_span(d), [&](auto index) {
      CONVNET_LAUNCH((local_bwd_weights_direct_kernel<decltype(index)>), g.grid, g.block, 0,
                     current_stream(), d, LocalDivs(d), x, dy, dw, accumulate);
    });
    return;
  }
  const dim3 grid = tile_grid(int64_t(tiles(d.K)) * tiles(d.Fg), d, "local_bwd_weights");
  with_index(local_span(d), [&](auto index) {
    CONVNET_LAUNCH((local_bwd_weights_tile_kernel<decltype(index)>), grid, kThreads, 0,
                   current_stream(), d, LocalDivs(d), x, dy, dw, accumulate);
  });
}

}  // namespace convnet
