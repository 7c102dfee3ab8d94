// CUDA pooling (declared in csrc/common/pool.h: windows, avg divisor, max tie rule).
//   x, dx : (C, H, W, N);  y, dy : (C, Ho, Wo, N)
// Thread mapping (pixel_grid.h): one thread per (pixel, image) — blockIdx.x the pixel, the images
// over blockIdx.y x threadIdx.x — so a warp touches 32 consecutive floats. Forward: a thread per
// output element reduces its window; with N % 4 == 0 and aligned buffers a thread takes 4
// consecutive images as float4 (a warp: 128 consecutive floats, a quarter of the threads).
// Backward: a thread per INPUT element gathers from the outputs whose windows contain it — no
// atomics, one writer per dx element, a fixed summation order (outputs row-major, like the CPU
// backend's scatter), so the result is deterministic; 4 consecutive images per thread (float4)
// under the forward's condition, each image with its own tie scan (lanes.cuh).
// Winners (pool.h): the max forward records each lane's winner as it reduces (a strict > moves
// it: the first pixel equal to the max); the backward's thread then compares each covering
// output's winner with its own offset in that window instead of rescanning x against y.
#include <algorithm>

#include "conv.h"
#include "cuda_check.h"
#include "fast_div.cuh"
#include "grid_stride.cuh"
#include "index_width.cuh"
#include "lanes.cuh"
#include "pixel_grid.h"
#include "pool.h"
#include "relu_bias.h"

namespace convnet {

// The forward's arithmetic on one image (float) or four consecutive ones (float4).
__device__ __forceinline__ float pool_max(float a, float v) { return v > a ? v : a; }
__device__ __forceinline__ float4 pool_max(float4 a, float4 v) {
  return make_float4(pool_max(a.x, v.x), pool_max(a.y, v.y), pool_max(a.z, v.z),
                     pool_max(a.w, v.w));
}
__device__ __forceinline__ float pool_add(float a, float v) { return a + v; }
__device__ __forceinline__ float4 pool_add(float4 a, float4 v) {
  return make_float4(a.x + v.x, a.y + v.y, a.z + v.z, a.w + v.w);
}
__device__ __forceinline__ float pool_scale(float a, float s) { return a * s; }
__device__ __forceinline__ float4 pool_scale(float4 a, float s) {
  return make_float4(a.x * s, a.y * s, a.z * s, a.w * s);
}

// An output pixel of the forward's grid (blockIdx.x = (c, oy, ox)) for image n: its element
// offset in y and its clipped window, with x's offset at the window's first pixel.
template <class I>
struct PoolOutput {
  I y;       // (c, oy, ox, n)
  I xfirst;  // (c, ylo, xlo, n)
  int ylo, yhi, xlo, xhi;
};

template <class I>
__device__ __forceinline__ PoolOutput<I> pool_output(const PoolParams& p, FastDiv by_out_w,
                                                     FastDiv by_out_h, int pix, int n) {
  const int N = p.images;
  const int row = by_out_w.div(pix), ox = pix - row * p.out_w;
  const int c = by_out_h.div(row), oy = row - c * p.out_h;
  PoolOutput<I> o;
  o.y = I(pix) * N + n;
  pool_window(oy, p.size, p.stride, p.start, p.height, &o.ylo, &o.yhi);
  pool_window(ox, p.size, p.stride, p.start, p.width, &o.xlo, &o.xhi);
  o.xfirst = ((I(c) * p.height + o.ylo) * p.width + o.xlo) * N + n;
  return o;
}

// An input pixel of the backward's grid (blockIdx.x = (c, iy, ix)) for image n: its element
// offset in x and dx, its position, and the outputs whose windows hold it, with their first
// one's offset in y and dy.
template <class I>
struct PoolInput {
  I x;       // (c, iy, ix, n)
  I ofirst;  // (c, oylo, oxlo, n)
  int iy, ix, oylo, oyhi, oxlo, oxhi;
};

template <class I>
__device__ __forceinline__ PoolInput<I> pool_input(const PoolParams& p, FastDiv by_width,
                                                   FastDiv by_height, int pix, int n) {
  const int N = p.images;
  const int row = by_width.div(pix);
  const int c = by_height.div(row);
  PoolInput<I> q;
  q.ix = pix - row * p.width, q.iy = row - c * p.height;
  q.x = I(pix) * N + n;
  pool_outputs_of(q.iy, p.size, p.stride, p.start, p.out_h, &q.oylo, &q.oyhi);
  pool_outputs_of(q.ix, p.size, p.stride, p.start, p.out_w, &q.oxlo, &q.oxhi);
  q.ofirst = ((I(c) * p.out_h + q.oylo) * p.out_w + q.oxlo) * N + n;
  return q;
}

// V = float: a thread per output element; V = float4: a thread per 4 consecutive images of an
// output pixel (N % 4 == 0, x and y 16-byte aligned), loaded and stored as float4.
template <class V, class I>
__global__ void pool_fwd_kernel(PoolParams p, FastDiv by_out_w, FastDiv by_out_h,
                                const float* __restrict__ x, float* __restrict__ y) {
  constexpr int kImages = int(sizeof(V) / sizeof(float));
  const int N = p.images, n = (blockIdx.y * blockDim.x + threadIdx.x) * kImages;
  const int pix = blockIdx.x;  // (c, oy, ox)
  if (n < N) {
    const PoolOutput<I> o = pool_output<I>(p, by_out_w, by_out_h, pix, n);
    const I i = o.y;
    const int ylo = o.ylo, yhi = o.yhi, xlo = o.xlo, xhi = o.xhi;
    const I in_row = I(p.width) * N;
    I xrow = o.xfirst;  // the window is walked by offset increments
    V acc = *reinterpret_cast<const V*>(x + xrow);
    for (int iy = ylo; iy < yhi; ++iy, xrow += in_row) {
      I xp = xrow + (iy == ylo ? N : 0);
      for (int ix = (iy == ylo ? xlo + 1 : xlo); ix < xhi; ++ix, xp += N) {
        const V v = *reinterpret_cast<const V*>(x + xp);
        acc = p.mode == PoolMode::max ? pool_max(acc, v) : pool_add(acc, v);
      }
    }
    if (p.mode == PoolMode::avg) acc = pool_scale(acc, 1.f / float((yhi - ylo) * (xhi - xlo)));
    *reinterpret_cast<V*>(y + i) = acc;
  }
}

// The max forward recording winners, L images per thread (lanes.cuh): the same window walk and
// select as pool_fwd_kernel (the same y bits), with each lane's winner offset beside its max.
template <int L, class I>
__global__ void pool_fwd_winners_kernel(PoolParams p, FastDiv by_out_w, FastDiv by_out_h,
                                        const float* __restrict__ x, float* __restrict__ y,
                                        uint8_t* __restrict__ winners) {
  using V = Lanes<L>;
  const int N = p.images, n = (blockIdx.y * blockDim.x + threadIdx.x) * L;
  const int pix = blockIdx.x;  // (c, oy, ox)
  if (n < N) {
    const PoolOutput<I> o = pool_output<I>(p, by_out_w, by_out_h, pix, n);
    const I i = o.y;
    const int ylo = o.ylo, yhi = o.yhi, xlo = o.xlo, xhi = o.xhi;
    const I in_row = I(p.width) * N;
    I xrow = o.xfirst;
    V best = V::load(x + xrow);
    int at[L] = {};
    int offset = 0;
    for (int iy = ylo; iy < yhi; ++iy, xrow += in_row) {
      I xp = xrow + (iy == ylo ? N : 0);
      for (int ix = (iy == ylo ? xlo + 1 : xlo); ix < xhi; ++ix, xp += N) {
        const V v = V::load(x + xp);
        ++offset;
#pragma unroll
        for (int l = 0; l < L; ++l)
          if (v.v[l] > best.v[l]) best.v[l] = v.v[l], at[l] = offset;
      }
    }
    best.store(y + i);
#pragma unroll
    for (int l = 0; l < L; ++l) {
      const float m = best.v[l];
      const int sign = __float_as_int(m) > 0 ? 0 : kPoolNotPositive;
      winners[i + l] = uint8_t((m == m ? at[l] : kPoolNoWinner) | sign);
    }
  }
}

// L images per thread (lanes.cuh): L = 4 when N % 4 == 0 and every buffer is 16-byte aligned,
// else 1. Each lane keeps the scalar path's own tie scan and summation order, so both paths give
// the same bits. blockIdx.x, the input pixel (c, iy, ix), is decoded once through FastDiv; the
// loops step by offsets of the index type I (index_width.cuh): no division, and on the 32-bit
// path no 64-bit arithmetic (a 32-bit multiply-add where a tie scan starts).
template <int L, class I>
__global__ void pool_bwd_kernel(PoolParams p, FastDiv by_width, FastDiv by_height,
                                const float* __restrict__ dy, const float* __restrict__ x,
                                const float* __restrict__ y, float* __restrict__ dx,
                                bool accumulate) {
  using V = Lanes<L>;
  const int N = p.images, n = (blockIdx.y * blockDim.x + threadIdx.x) * L;
  const int pix = blockIdx.x;  // (c, iy, ix)
  if (n < N) {
    const PoolInput<I> q = pool_input<I>(p, by_width, by_height, pix, n);
    const I i = q.x, obase = q.ofirst;
    const int iy = q.iy, ix = q.ix, oylo = q.oylo, oyhi = q.oyhi, oxlo = q.oxlo, oxhi = q.oxhi;
    const I out_row = I(p.out_w) * N, in_row = I(p.width) * N;
    V sum = V::fill(0.f);
    if (p.mode == PoolMode::avg) {
      I orow = obase;
      for (int oy = oylo; oy < oyhi; ++oy, orow += out_row) {
        int ylo, yhi;
        pool_window(oy, p.size, p.stride, p.start, p.height, &ylo, &yhi);
        I o = orow;
        for (int ox = oxlo; ox < oxhi; ++ox, o += N) {
          int xlo, xhi;
          pool_window(ox, p.size, p.stride, p.start, p.width, &xlo, &xhi);
          const float inv_area = 1.f / float((yhi - ylo) * (xhi - xlo));
          const V d = V::load(dy + o);
#pragma unroll
          for (int l = 0; l < L; ++l) sum.v[l] += d.v[l] * inv_area;
        }
      }
    } else {
      const V xi = V::load(x + i);
      const I xc = i - (I(iy) * p.width + ix) * N;  // (c, 0, 0, n)
      I orow = obase;
      for (int oy = oylo; oy < oyhi; ++oy, orow += out_row) {
        int ylo, yhi;
        pool_window(oy, p.size, p.stride, p.start, p.height, &ylo, &yhi);
        I o = orow;
        for (int ox = oxlo; ox < oxhi; ++ox, o += N) {
          int xlo, xhi;
          pool_window(ox, p.size, p.stride, p.start, p.width, &xlo, &xhi);
          const V m = V::load(y + o);
          // first[l]: lane l's pixel holds the max and no earlier pixel (row-major) does.
          bool first[L], any = false;
#pragma unroll
          for (int l = 0; l < L; ++l) any |= first[l] = xi.v[l] == m.v[l];
          if (!any) continue;
          I qrow = xc + (I(ylo) * p.width + xlo) * N;
          for (int qy = ylo; qy <= iy && any; ++qy, qrow += in_row) {
            I q = qrow;
            for (int qx = xlo; qx < (qy == iy ? ix : xhi) && any; ++qx, q += N) {
              const V v = V::load(x + q);
              any = false;
#pragma unroll
              for (int l = 0; l < L; ++l) any |= first[l] = first[l] && v.v[l] != m.v[l];
            }
          }
          if (!any) continue;
          const V d = V::load(dy + o);
#pragma unroll
          for (int l = 0; l < L; ++l)
            if (first[l]) sum.v[l] += d.v[l];
        }
      }
    }
    V g = accumulate ? V::load(dx + i) : V::fill(0.f);
#pragma unroll
    for (int l = 0; l < L; ++l) g.v[l] = accumulate ? g.v[l] + sum.v[l] : sum.v[l];
    g.store(dx + i);
  }
}

// pool_bwd_kernel's max gather from the forward's winners: an output routes to this pixel when
// its winner's offset is the pixel's offset in its window; the same adds in the same order (the
// same bits). relu (pool_bwd_winners_relu_bias): the sum is then multiplied by the ReLU's
// gradient at x, as relu_bias_bwd multiplies dx: a pixel that wins any window has x = that
// window's y, whose sign its winner byte carries (kPoolNotPositive); one that wins none has
// the sum +0, whatever its x.
template <int L, class I>
__global__ void pool_bwd_winners_kernel(PoolParams p, FastDiv by_width, FastDiv by_height,
                                        const float* __restrict__ dy,
                                        const uint8_t* __restrict__ winners,
                                        float* __restrict__ dx, bool accumulate, bool relu) {
  using V = Lanes<L>;
  const int N = p.images, n = (blockIdx.y * blockDim.x + threadIdx.x) * L;
  const int pix = blockIdx.x;  // (c, iy, ix)
  if (n < N) {
    const PoolInput<I> q = pool_input<I>(p, by_width, by_height, pix, n);
    const I i = q.x;
    const int iy = q.iy, ix = q.ix, oylo = q.oylo, oyhi = q.oyhi, oxlo = q.oxlo, oxhi = q.oxhi;
    const I out_row = I(p.out_w) * N;
    V sum = V::fill(0.f), keep = V::fill(1.f);
    I orow = q.ofirst;
    for (int oy = oylo; oy < oyhi; ++oy, orow += out_row) {
      int ylo, yhi;
      pool_window(oy, p.size, p.stride, p.start, p.height, &ylo, &yhi);
      I o = orow;
      for (int ox = oxlo; ox < oxhi; ++ox, o += N) {
        int xlo, xhi;
        pool_window(ox, p.size, p.stride, p.start, p.width, &xlo, &xhi);
        const int offset = (iy - ylo) * (xhi - xlo) + (ix - xlo);
        // The L lanes' winners as one word (L = 4: 4-byte aligned, indexed in words so the
        // address is formed per access from the 32-bit offset, as the float loads' are).
        const uint32_t codes = L == 4 ? reinterpret_cast<const uint32_t*>(winners)[o >> 2]
                                      : uint32_t(winners[o]);
        bool hit[L], any = false;
#pragma unroll
        for (int l = 0; l < L; ++l)
          any |= hit[l] = int((codes >> (8 * l)) & kPoolNoWinner) == offset;
        if (!any) continue;
        const V d = V::load(dy + o);
#pragma unroll
        for (int l = 0; l < L; ++l)
          if (hit[l]) {
            sum.v[l] += d.v[l];
            if ((codes >> (8 * l)) & kPoolNotPositive) keep.v[l] = 0.f;
          }
      }
    }
    V g = accumulate ? V::load(dx + i) : V::fill(0.f);
#pragma unroll
    for (int l = 0; l < L; ++l) {
      const float s = relu ? sum.v[l] * keep.v[l] : sum.v[l];
      g.v[l] = accumulate ? g.v[l] + s : s;
    }
    g.store(dx + i);
  }
}

namespace {
// Every offset a pooling launch forms stays below this: (C + 1) planes of the larger of x and y.
int64_t pool_span(const PoolParams& p) {
  return (int64_t(p.channels) + 1) *
         std::max(int64_t(p.height) * p.width, int64_t(p.out_h) * p.out_w) * p.images;
}
}  // namespace

void pool_fwd_cuda(const PoolParams& p, const float* x, float* y, uint8_t* winners) {
  const int64_t pixels = int64_t(p.channels) * p.out_h * p.out_w;
  if (pixels == 0 || p.images == 0) return;
  const bool vec = p.images % 4 == 0 && aligned16(x) && aligned16(y);
  const PixelGrid g = pixel_grid(pixels, vec ? p.images / 4 : p.images);
  const FastDiv by_out_w(p.out_w), by_out_h(p.out_h);
  with_index(pool_span(p), [&](auto index) {
    using I = decltype(index);
    if (winners && vec)
      CONVNET_LAUNCH((pool_fwd_winners_kernel<4, I>), g.grid, g.block, 0, current_stream(), p,
                     by_out_w, by_out_h, x, y, winners);
    else if (winners)
      CONVNET_LAUNCH((pool_fwd_winners_kernel<1, I>), g.grid, g.block, 0, current_stream(), p,
                     by_out_w, by_out_h, x, y, winners);
    else if (vec)
      CONVNET_LAUNCH((pool_fwd_kernel<float4, I>), g.grid, g.block, 0, current_stream(), p,
                     by_out_w, by_out_h, x, y);
    else
      CONVNET_LAUNCH((pool_fwd_kernel<float, I>), g.grid, g.block, 0, current_stream(), p,
                     by_out_w, by_out_h, x, y);
  });
}

void pool_bwd_cuda(const PoolParams& p, const float* dy, const float* x, const float* y,
                   float* dx, bool accumulate) {
  const int64_t pixels = int64_t(p.channels) * p.height * p.width;
  if (pixels == 0 || p.images == 0) return;
  // The avg backward reads neither x nor y (they may be null).
  const bool vec = p.images % 4 == 0 && aligned16(dy) && aligned16(dx) &&
                   (p.mode == PoolMode::avg || (aligned16(x) && aligned16(y)));
  const PixelGrid g = pixel_grid(pixels, vec ? p.images / 4 : p.images);
  const FastDiv by_width(p.width), by_height(p.height);
  with_index(pool_span(p), [&](auto index) {
    using I = decltype(index);
    if (vec)
      CONVNET_LAUNCH((pool_bwd_kernel<4, I>), g.grid, g.block, 0, current_stream(), p, by_width,
                     by_height, dy, x, y, dx, accumulate);
    else
      CONVNET_LAUNCH((pool_bwd_kernel<1, I>), g.grid, g.block, 0, current_stream(), p, by_width,
                     by_height, dy, x, y, dx, accumulate);
  });
}

namespace {
// relu: for pool_bwd_winners_relu_bias, dx masked by the ReLU's gradient.
void pool_bwd_winners_launch(const PoolParams& p, const float* dy, const uint8_t* winners,
                             float* dx, bool accumulate, bool relu) {
  const int64_t pixels = int64_t(p.channels) * p.height * p.width;
  if (pixels == 0 || p.images == 0) return;
  const bool vec = p.images % 4 == 0 && aligned16(dy) && aligned16(dx) &&
                   reinterpret_cast<uintptr_t>(winners) % 4 == 0;
  const PixelGrid g = pixel_grid(pixels, vec ? p.images / 4 : p.images);
  const FastDiv by_width(p.width), by_height(p.height);
  with_index(pool_span(p), [&](auto index) {
    using I = decltype(index);
    if (vec)
      CONVNET_LAUNCH((pool_bwd_winners_kernel<4, I>), g.grid, g.block, 0, current_stream(), p,
                     by_width, by_height, dy, winners, dx, accumulate, relu);
    else
      CONVNET_LAUNCH((pool_bwd_winners_kernel<1, I>), g.grid, g.block, 0, current_stream(), p,
                     by_width, by_height, dy, winners, dx, accumulate, relu);
  });
}

}  // namespace

void pool_bwd_winners_cuda(const PoolParams& p, const float* dy, const uint8_t* winners,
                           float* dx, bool accumulate) {
  pool_bwd_winners_launch(p, dy, winners, dx, accumulate, false);
}

// Declared in relu_bias.h: the winners backward with the ReLU's mask applied as it stores dx
// (relu_bias_bwd's product), then the plain bias gradient, the kernel relu_bias_bwd runs, on the
// same values: pool_bwd_relu_bias's bits (relu_bias.cu) without reading x.
void pool_bwd_winners_relu_bias_cuda(const PoolParams& p, const float* dy,
                                     const uint8_t* winners, float* dx, float* db) {
  pool_bwd_winners_launch(p, dy, winners, dx, false, true);
  bias_bwd_cuda(dx, db, p.channels, int64_t(p.height) * p.width * p.images, false);
}

}  // namespace convnet
