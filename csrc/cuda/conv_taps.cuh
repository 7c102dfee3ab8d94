// Tap tables and window masks of the implicit-GEMM convolutions (conv.cu): whatever a gathered
// element's address and bounds test need that depends on the reduction index alone is decoded
// once into a table in device memory (per device and shape: conv.cu's tap_table), so that a main
// loop gathers an element with a table load, one logic op, an address and a predicated load — no
// division, no compares.
//
// Bounds as bits: filter tap (ky, kx) is `tap_bits` = bit ky | bit (16 + kx). A thread's window
// (the pixels a column's taps land on) has an `inside` mask with bit ky set when row ky of the
// window lies in the image (for the data gradient: when an output reads the pixel through it) and
// bit 16 + kx likewise for column kx. The tap is inside iff (tap_bits & ~inside) == 0. Filters are
// at most kMaxTileFilter = 15 wide, so bit 15 is never in a mask: kNoTap marks the tables' padding
// past the last reduction index (a whole K step), which therefore always reads as zero.
//
// Tables (int32: the launchers check that every tensor spans < 2^31 elements):
//   fwd_taps     k < K = Cg*fs*fs, k = (c*fs + ky)*fs + kx:  {((c*H + ky)*W + kx)*N, tap bits}
//                (offset of the tap's pixel from the window corner in x (C, H, W, N))
//   data_taps    r < fs*fs*Fg, r = (ky*fs + kx)*Fg + f:
//                {f*P*N - ((ky/s)*Wo + kx/s)*N, tap bits}: the dy element an output reads at
//                that tap, from the thread's base (pixel + padding) / stride (see DyTapsLoader);
//                data_woffs[r] = (ky*fs + kx)*F + f, the tap's row of w (C/groups, fs, fs, F)
//   positions    p < P = Ho*Wo: {(iy0*W + ix0)*N, inside mask of the window at p}, iy0 = oy*s -
//                pad; entry P = {0, 0} (nothing inside) for reduction indices past the end.
#pragma once
#include <cstdint>

#include "cuda_check.h"
#include "fast_div.cuh"

namespace convnet {

constexpr int kMaxTileFilter = 15;
constexpr unsigned kNoTap = 1u << 15;

__host__ __device__ __forceinline__ unsigned tap_bits(int ky, int kx) {
  return 1u << ky | 1u << (16 + kx);
}

// Bits k (< fs) for which lo + k lies in [0, n).
__device__ __forceinline__ unsigned axis_bits(int lo, int n, int fs) {
  unsigned b = 0;
  for (int k = 0; k < fs; ++k)
    if (unsigned(lo + k) < unsigned(n)) b |= 1u << k;
  return b;
}

// The data gradient's axis: bits k (< fs) for which an output o < n reads coordinate
// `q * s + rem` (pixel + padding) through filter offset k: k = rem + j*s, o = q - j.
__device__ __forceinline__ unsigned strided_axis_bits(int q, int rem, int s, int n, int fs) {
  unsigned b = 0;
  for (int k = rem, o = q; k < fs; k += s, --o)
    if (unsigned(o) < unsigned(n)) b |= 1u << k;
  return b;
}

// The shapes in 32 bits with their divisors, for the tiled kernels and their tables (conv.cu
// derives them from its ConvDims once per launch and checks that they fit).
struct TileDims {
  int H, W, N, F, fs, pad, stride, Ho, Wo, Cg, Fg, taps, K, P, PN, HWN;
  FastDiv by_N, by_W, by_Wo, by_stride;
};

// The tables' own decoders, apart from TileDims: the tile kernels' parameters stay as they were
// (a larger TileDims cost the weight gradient's main loop 15 integer instructions).
struct TapDivs {
  FastDiv by_taps, by_fs, by_Fg;
  explicit TapDivs(const TileDims& d)
      : by_taps(d.taps), by_fs(d.fs), by_Fg(d.Fg > 0 ? d.Fg : 1) {}
};

// One thread per entry (grid-stride); `count` entries, those past the last reduction index are
// padding.
__global__ void fwd_taps_kernel(TileDims d, TapDivs v, int2* __restrict__ taps, int count) {
  for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < count; k += gridDim.x * blockDim.x) {
    if (k >= d.K) {
      taps[k] = make_int2(0, int(kNoTap));
      continue;
    }
    const int c = v.by_taps.div(k), t = k - c * d.taps;
    const int ky = v.by_fs.div(t), kx = t - ky * d.fs;
    taps[k] = make_int2(((c * d.H + ky) * d.W + kx) * d.N, int(tap_bits(ky, kx)));
  }
}

__global__ void data_taps_kernel(TileDims d, TapDivs v, int2* __restrict__ taps,
                                 int* __restrict__ woffs, int count) {
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < count; r += gridDim.x * blockDim.x) {
    if (r >= d.taps * d.Fg) {
      taps[r] = make_int2(0, int(kNoTap));
      woffs[r] = 0;
      continue;
    }
    const int t = v.by_Fg.div(r), f = r - t * d.Fg;
    const int ky = v.by_fs.div(t), kx = t - ky * d.fs;
    taps[r] = make_int2(f * d.PN - (d.by_stride.div(ky) * d.Wo + d.by_stride.div(kx)) * d.N,
                        int(tap_bits(ky, kx)));
    woffs[r] = t * d.F + f;
  }
}

__global__ void positions_kernel(TileDims d, int2* __restrict__ pos) {
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p <= d.P; p += gridDim.x * blockDim.x) {
    if (p == d.P) {
      pos[p] = make_int2(0, 0);
      continue;
    }
    const int oy = d.by_Wo.div(p), ox = p - oy * d.Wo;
    const int iy0 = oy * d.stride - d.pad, ix0 = ox * d.stride - d.pad;
    pos[p] = make_int2((iy0 * d.W + ix0) * d.N,
                       int(axis_bits(iy0, d.H, d.fs) | axis_bits(ix0, d.W, d.fs) << 16));
  }
}

}  // namespace convnet
