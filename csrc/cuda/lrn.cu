// CUDA response normalisation (declared in csrc/common/lrn.h, maths and windows there).
// All buffers (C, H, W, N). Deterministic: no atomics; each output element is computed by one
// thread, with its sums in a fixed order (ascending channel; same-map: rows outer, columns inner
// — the CPU backend's order).
//
// Thread mapping (pixel_grid.h): one thread per (pixel, image), images consecutive in a warp, so
// every load and store coalesces; when N % 4 == 0 and every buffer is 16-byte aligned, one thread
// per (pixel, 4 consecutive images), each access a 128-bit load or store (lanes.cuh: the same bits
// as the scalar path).
//   cross-map: the pixels are the H*W of one plane and each thread loops over the channels. A
//     channel's window re-reads rows that the previous channels loaded (L1/L2 hits): x comes
//     from DRAM once.
//   same-map: the pixels are all C*H*W; each thread sums its size x size window (again served by
//     the caches after the first touch).
#include <initializer_list>

#include "cuda_check.h"
#include "fast_div.cuh"
#include "grid_stride.cuh"
#include "index_width.cuh"
#include "lanes.cuh"
#include "lrn.h"
#include "pixel_grid.h"

namespace convnet {

// Arithmetic: every product and sum is an explicit intrinsic (__fmaf_rn, __fmul_rn, __fadd_rn),
// which nvcc never fuses or splits. With plain operators it contracts a * b + c into an FMA where
// the surrounding code lets it, differently in the 4-lane and 1-lane instances: on an H200 the
// two paths then differed in the last bit. Spelled out, both round at the same steps.

// d^(-beta): AlexNet's beta = 0.75 as two reciprocal square roots, any other through __powf.
template <bool kThreeQuarters>
__device__ __forceinline__ float lrn_pow_neg(float d, float beta) {
  if (kThreeQuarters) return __fmul_rn(rsqrtf(d), rsqrtf(sqrtf(d)));
  return __powf(d, -beta);
}

// dx's element from the window sum of dy y / d: dy d^(-beta) + coef x sum (+ dx when
// accumulating).
template <bool kThreeQuarters>
__device__ __forceinline__ float lrn_grad(float dy, float d, float x, float sum, float coef,
                                          float beta, bool accumulate, float dx) {
  const float g = __fadd_rn(__fmul_rn(dy, lrn_pow_neg<kThreeQuarters>(d, beta)),
                            __fmul_rn(__fmul_rn(coef, x), sum));
  return accumulate ? __fadd_rn(dx, g) : g;
}

// The forward's last step, shared by both normalisations: from the lanes' window sums, the
// denominator d = min_div + alpha * sum (kept for the backward) and y = x * d^(-beta), at the
// thread's offset o.
template <bool kThreeQuarters, int L, class I>
__device__ __forceinline__ void store_normalised(const NormParams& p, const Lanes<L>& sum,
                                                 const float* __restrict__ x,
                                                 float* __restrict__ y,
                                                 float* __restrict__ denoms, I o) {
  using V = Lanes<L>;
  const V xv = V::load(x + o);
  V d, out;
#pragma unroll
  for (int l = 0; l < L; ++l) {
    d.v[l] = __fmaf_rn(p.alpha, sum.v[l], p.min_div);
    out.v[l] = __fmul_rn(xv.v[l], lrn_pow_neg<kThreeQuarters>(d.v[l], p.pow));
  }
  d.store(denoms + o);
  out.store(y + o);
}

// L images per thread (lanes.cuh): L = 4 when N % 4 == 0 and every buffer is 16-byte aligned,
// else 1. Threads step through a window's channels or pixels by offsets of the index type I from
// the kernel's base pointers (index_width.cuh: int where norm_span fits in 32 bits, else
// int64_t): no division in any loop, and on the 32-bit path no 64-bit arithmetic either.
template <int L, bool kThreeQuarters, class I>
__global__ void lrn_fwd_kernel(NormParams p, const float* __restrict__ x, float* __restrict__ y,
                               float* __restrict__ denoms) {
  using V = Lanes<L>;
  const I plane = I(p.height) * p.width * p.images;
  const int n = (blockIdx.y * blockDim.x + threadIdx.x) * L;
  if (n < p.images) {
    I oc = I(blockIdx.x) * p.images + n;  // channel c of this thread's pixel and images
    for (int c = 0; c < p.channels; ++c, oc += plane) {
      const int first = norm_window_first(c, p.size);
      const int lo = max(0, first), hi = min(p.channels, first + p.size);
      V sum = V::fill(0.f);
      I oj = oc - I(c - lo) * plane;
      for (int j = lo; j < hi; ++j, oj += plane) {
        const V v = V::load(x + oj);
#pragma unroll
        for (int l = 0; l < L; ++l) sum.v[l] = __fmaf_rn(v.v[l], v.v[l], sum.v[l]);
      }
      store_normalised<kThreeQuarters>(p, sum, x, y, denoms, oc);
    }
  }
}

template <int L, bool kThreeQuarters, class I>
__global__ void lrn_bwd_kernel(NormParams p, const float* __restrict__ dy,
                               const float* __restrict__ x, const float* __restrict__ y,
                               const float* __restrict__ denoms, float* __restrict__ dx,
                               bool accumulate) {
  using V = Lanes<L>;
  const I plane = I(p.height) * p.width * p.images;
  const float coef = -2.f * p.alpha * p.pow;
  const int n = (blockIdx.y * blockDim.x + threadIdx.x) * L;
  if (n < p.images) {
    I och = I(blockIdx.x) * p.images + n;  // channel ch of this thread's pixel and images
    for (int ch = 0; ch < p.channels; ++ch, och += plane) {
      // Channels c whose windows contain ch: c - size/2 <= ch <= c - size/2 + size - 1.
      const int lo = max(0, ch - (p.size - 1 - p.size / 2));
      const int hi = min(p.channels, ch + p.size / 2 + 1);
      V sum = V::fill(0.f);
      I o = och - I(ch - lo) * plane;
      for (int c = lo; c < hi; ++c, o += plane) {
        const V dyv = V::load(dy + o), yv = V::load(y + o), dv = V::load(denoms + o);
#pragma unroll
        for (int l = 0; l < L; ++l)
          sum.v[l] = __fadd_rn(sum.v[l], __fmul_rn(dyv.v[l], yv.v[l]) / dv.v[l]);
      }
      o = och;
      const V dyv = V::load(dy + o), dv = V::load(denoms + o), xv = V::load(x + o);
      V g = accumulate ? V::load(dx + o) : V::fill(0.f);
#pragma unroll
      for (int l = 0; l < L; ++l)
        g.v[l] = lrn_grad<kThreeQuarters>(dyv.v[l], dv.v[l], xv.v[l], sum.v[l], coef, p.pow,
                                          accumulate, g.v[l]);
      g.store(dx + o);
    }
  }
}

// Same-map: blockIdx.x is the pixel (c, h, w), decoded once per block through FastDiv.
template <int L, bool kThreeQuarters, class I>
__global__ void rnorm_fwd_kernel(NormParams p, FastDiv by_width, FastDiv by_height,
                                 const float* __restrict__ x, float* __restrict__ y,
                                 float* __restrict__ denoms) {
  using V = Lanes<L>;
  const int N = p.images;
  const int n = (blockIdx.y * blockDim.x + threadIdx.x) * L;
  if (n < N) {
    const int pix = blockIdx.x;  // (c, h, w)
    const int i_row = by_width.div(pix), w = pix - i_row * p.width;
    const int h = i_row - by_height.div(i_row) * p.height;
    const I i = I(pix) * N + n;
    const int fy = norm_window_first(h, p.size), fx = norm_window_first(w, p.size);
    const int ylo = max(0, fy), yhi = min(p.height, fy + p.size);
    const int xlo = max(0, fx), xhi = min(p.width, fx + p.size);
    const I row_step = I(p.width) * N;
    // Offset of (channel c, row ylo, column xlo, image n).
    I xr = i + (I(ylo - h) * p.width + (xlo - w)) * N;
    V sum = V::fill(0.f);
    for (int yy = ylo; yy < yhi; ++yy, xr += row_step) {
      V row = V::fill(0.f);
      I xp = xr;
      for (int xx = xlo; xx < xhi; ++xx, xp += N) {
        const V v = V::load(x + xp);
#pragma unroll
        for (int l = 0; l < L; ++l) row.v[l] = __fmaf_rn(v.v[l], v.v[l], row.v[l]);
      }
#pragma unroll
      for (int l = 0; l < L; ++l) sum.v[l] = __fadd_rn(sum.v[l], row.v[l]);
    }
    store_normalised<kThreeQuarters>(p, sum, x, y, denoms, i);
  }
}

template <int L, bool kThreeQuarters, class I>
__global__ void rnorm_bwd_kernel(NormParams p, FastDiv by_width, FastDiv by_height,
                                 const float* __restrict__ dy, const float* __restrict__ x,
                                 const float* __restrict__ y, const float* __restrict__ denoms,
                                 float* __restrict__ dx, bool accumulate) {
  using V = Lanes<L>;
  const int N = p.images;
  const float coef = -2.f * p.alpha * p.pow;
  const int back = p.size - 1 - p.size / 2, ahead = p.size / 2;  // reverse window
  const int n = (blockIdx.y * blockDim.x + threadIdx.x) * L;
  if (n < N) {
    const int pix = blockIdx.x;  // (c, h, w)
    const int i_row = by_width.div(pix), w = pix - i_row * p.width;
    const int h = i_row - by_height.div(i_row) * p.height;
    const I i = I(pix) * N + n;
    const int ylo = max(0, h - back), yhi = min(p.height, h + ahead + 1);
    const int xlo = max(0, w - back), xhi = min(p.width, w + ahead + 1);
    const I row_step = I(p.width) * N;
    // Offset of (channel c, row ylo, column xlo, image n).
    I orow = i + (I(ylo - h) * p.width + (xlo - w)) * N;
    V sum = V::fill(0.f);
    for (int yy = ylo; yy < yhi; ++yy, orow += row_step) {
      V row = V::fill(0.f);
      I o = orow;
      for (int xx = xlo; xx < xhi; ++xx, o += N) {
        const V dyv = V::load(dy + o), yv = V::load(y + o), dv = V::load(denoms + o);
#pragma unroll
        for (int l = 0; l < L; ++l)
          row.v[l] = __fadd_rn(row.v[l], __fmul_rn(dyv.v[l], yv.v[l]) / dv.v[l]);
      }
#pragma unroll
      for (int l = 0; l < L; ++l) sum.v[l] = __fadd_rn(sum.v[l], row.v[l]);
    }
    const V dyv = V::load(dy + i), dv = V::load(denoms + i), xv = V::load(x + i);
    V g = accumulate ? V::load(dx + i) : V::fill(0.f);
#pragma unroll
    for (int l = 0; l < L; ++l)
      g.v[l] = lrn_grad<kThreeQuarters>(dyv.v[l], dv.v[l], xv.v[l], sum.v[l], coef, p.pow,
                                        accumulate, g.v[l]);
    g.store(dx + i);
  }
}

namespace {
// Cross-map threads cover one plane's pixels; same-map threads every channel's. With L images per
// thread the grid covers N / L thread columns.
PixelGrid lrn_grid(const NormParams& p, int lanes) {
  return pixel_grid(int64_t(p.height) * p.width, p.images / lanes);
}
PixelGrid rnorm_grid(const NormParams& p, int lanes) {
  return pixel_grid(int64_t(p.channels) * p.height * p.width, p.images / lanes);
}
bool empty_norm(const NormParams& p) {
  return int64_t(p.channels) * p.height * p.width * p.images == 0;
}
// 4 images per thread when N % 4 == 0 and every buffer is 16-byte aligned (grid_stride.cuh).
int norm_lanes(const NormParams& p, std::initializer_list<const void*> buffers) {
  if (p.images % 4 != 0) return 1;
  for (const void* b : buffers)
    if (!aligned16(b)) return 1;
  return 4;
}

// Every offset a launch forms, a window's reach past the last channel or row included, stays
// below this: (C + 1) planes plus a row.
int64_t norm_span(const NormParams& p) {
  return (int64_t(p.channels) + 1) * p.height * p.width * p.images + int64_t(p.width) * p.images;
}

// Launches K<L, beta == 0.75, I> with L from norm_lanes and I from norm_span: the eight
// instantiations of a kernel.
template <template <int, bool, class> class Launch, class... Args>
void launch_norm(const NormParams& p, int lanes, const PixelGrid& g, Args... args) {
  const bool three_quarters = p.pow == 0.75f;
  with_index(norm_span(p), [&](auto index) {
    using I = decltype(index);
    if (lanes == 4)
      three_quarters ? Launch<4, true, I>::run(g, p, args...)
                     : Launch<4, false, I>::run(g, p, args...);
    else
      three_quarters ? Launch<1, true, I>::run(g, p, args...)
                     : Launch<1, false, I>::run(g, p, args...);
  });
}

template <int L, bool k34, class I>
struct LrnFwd {
  static void run(const PixelGrid& g, const NormParams& p, const float* x, float* y, float* d) {
    CONVNET_LAUNCH((lrn_fwd_kernel<L, k34, I>), g.grid, g.block, 0, current_stream(), p, x, y,
                   d);
  }
};
template <int L, bool k34, class I>
struct LrnBwd {
  static void run(const PixelGrid& g, const NormParams& p, const float* dy, const float* x,
                  const float* y, const float* d, float* dx, bool accumulate) {
    CONVNET_LAUNCH((lrn_bwd_kernel<L, k34, I>), g.grid, g.block, 0, current_stream(), p, dy, x,
                   y, d, dx, accumulate);
  }
};
template <int L, bool k34, class I>
struct RnormFwd {
  static void run(const PixelGrid& g, const NormParams& p, const float* x, float* y, float* d) {
    CONVNET_LAUNCH((rnorm_fwd_kernel<L, k34, I>), g.grid, g.block, 0, current_stream(), p,
                   FastDiv(p.width), FastDiv(p.height), x, y, d);
  }
};
template <int L, bool k34, class I>
struct RnormBwd {
  static void run(const PixelGrid& g, const NormParams& p, const float* dy, const float* x,
                  const float* y, const float* d, float* dx, bool accumulate) {
    CONVNET_LAUNCH((rnorm_bwd_kernel<L, k34, I>), g.grid, g.block, 0, current_stream(), p,
                   FastDiv(p.width), FastDiv(p.height), dy, x, y, d, dx, accumulate);
  }
};
}  // namespace

void lrn_fwd_cuda(const NormParams& p, const float* x, float* y, float* denoms) {
  if (empty_norm(p)) return;
  const int lanes = norm_lanes(p, {x, y, denoms});
  launch_norm<LrnFwd>(p, lanes, lrn_grid(p, lanes), x, y, denoms);
}

void lrn_bwd_cuda(const NormParams& p, const float* dy, const float* x, const float* y,
                  const float* denoms, float* dx, bool accumulate) {
  if (empty_norm(p)) return;
  const int lanes = norm_lanes(p, {dy, x, y, denoms, dx});
  launch_norm<LrnBwd>(p, lanes, lrn_grid(p, lanes), dy, x, y, denoms, dx, accumulate);
}

void rnorm_fwd_cuda(const NormParams& p, const float* x, float* y, float* denoms) {
  if (empty_norm(p)) return;
  const int lanes = norm_lanes(p, {x, y, denoms});
  launch_norm<RnormFwd>(p, lanes, rnorm_grid(p, lanes), x, y, denoms);
}

void rnorm_bwd_cuda(const NormParams& p, const float* dy, const float* x, const float* y,
                    const float* denoms, float* dx, bool accumulate) {
  if (empty_norm(p)) return;
  const int lanes = norm_lanes(p, {dy, x, y, denoms, dx});
  launch_norm<RnormBwd>(p, lanes, rnorm_grid(p, lanes), dy, x, y, denoms, dx, accumulate);
}

}  // namespace convnet
