// CUDA pooling (declared in csrc/common/pool.h: windows, avg divisor, max tie rule).
//   x, dx : (C, H, W, N);  y, dy : (C, Ho, Wo, N)
// Thread mapping (pixel_grid.h): one thread per (pixel, image) — blockIdx.x the pixel, the images
// over blockIdx.y x threadIdx.x — so a warp touches 32 consecutive floats. Forward: a thread per
// output element reduces its window; with N % 4 == 0 and aligned buffers a thread takes 4
// consecutive images as float4 (a warp: 128 consecutive floats, a quarter of the threads).
// Backward: a thread per INPUT element gathers from the outputs whose windows contain it — no
// atomics, one writer per dx element, a fixed summation order (outputs row-major, like the CPU
// backend's scatter), so the result is deterministic.
#include "cuda_check.h"
#include "grid_stride.cuh"
#include "pixel_grid.h"
#include "pool.h"

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

// V = float: a thread per output element; V = float4: a thread per 4 consecutive images of an
// output pixel (N % 4 == 0, x and y 16-byte aligned), loaded and stored as float4.
template <class V>
__global__ void pool_fwd_kernel(PoolParams p, const float* __restrict__ x, float* __restrict__ y) {
  constexpr int kImages = int(sizeof(V) / sizeof(float));
  const int N = p.images, n = (blockIdx.y * blockDim.x + threadIdx.x) * kImages;
  const int pix = blockIdx.x;  // (c, oy, ox)
  if (n < N) {
    const int ox = pix % p.out_w, oy = pix / p.out_w % p.out_h, c = pix / (p.out_w * p.out_h);
    const int64_t i = int64_t(pix) * N + n;
    int ylo, yhi, xlo, xhi;
    pool_window(oy, p.size, p.stride, p.start, p.height, &ylo, &yhi);
    pool_window(ox, p.size, p.stride, p.start, p.width, &xlo, &xhi);
    const float* xc = x + int64_t(c) * p.height * p.width * N + n;
    V acc = *reinterpret_cast<const V*>(xc + (int64_t(ylo) * p.width + xlo) * N);
    for (int iy = ylo; iy < yhi; ++iy)
      for (int ix = (iy == ylo ? xlo + 1 : xlo); ix < xhi; ++ix) {
        const V v = *reinterpret_cast<const V*>(xc + (int64_t(iy) * p.width + ix) * N);
        acc = p.mode == PoolMode::max ? pool_max(acc, v) : pool_add(acc, v);
      }
    if (p.mode == PoolMode::avg) acc = pool_scale(acc, 1.f / float((yhi - ylo) * (xhi - xlo)));
    *reinterpret_cast<V*>(y + i) = acc;
  }
}

__global__ void pool_bwd_kernel(PoolParams p, const float* __restrict__ dy,
                                const float* __restrict__ x, const float* __restrict__ y,
                                float* __restrict__ dx, bool accumulate) {
  const int N = p.images, n = blockIdx.y * blockDim.x + threadIdx.x;
  const int pix = blockIdx.x;  // (c, iy, ix)
  if (n < N) {
    const int ix = pix % p.width, iy = pix / p.width % p.height, c = pix / (p.width * p.height);
    const int64_t i = int64_t(pix) * N + n;
    int oylo, oyhi, oxlo, oxhi;
    pool_outputs_of(iy, p.size, p.stride, p.start, p.out_h, &oylo, &oyhi);
    pool_outputs_of(ix, p.size, p.stride, p.start, p.out_w, &oxlo, &oxhi);
    const int64_t obase = int64_t(c) * p.out_h * p.out_w * N + n;
    const float* xc = p.mode == PoolMode::max ? x + int64_t(c) * p.height * p.width * N + n
                                              : nullptr;
    float sum = 0.f;
    for (int oy = oylo; oy < oyhi; ++oy)
      for (int ox = oxlo; ox < oxhi; ++ox) {
        const int64_t o = obase + (int64_t(oy) * p.out_w + ox) * N;
        int ylo, yhi, xlo, xhi;
        pool_window(oy, p.size, p.stride, p.start, p.height, &ylo, &yhi);
        pool_window(ox, p.size, p.stride, p.start, p.width, &xlo, &xhi);
        if (p.mode == PoolMode::avg) {
          sum += dy[o] * (1.f / float((yhi - ylo) * (xhi - xlo)));
          continue;
        }
        const float m = y[o];
        if (x[i] != m) continue;
        // This pixel holds the max; it gets dy only if no earlier pixel (row-major) does.
        bool first = true;
        for (int qy = ylo; qy <= iy && first; ++qy)
          for (int qx = xlo; qx < (qy == iy ? ix : xhi); ++qx)
            if (xc[(int64_t(qy) * p.width + qx) * N] == m) {
              first = false;
              break;
            }
        if (first) sum += dy[o];
      }
    dx[i] = accumulate ? dx[i] + sum : sum;
  }
}

void pool_fwd_cuda(const PoolParams& p, const float* x, float* y) {
  const int64_t pixels = int64_t(p.channels) * p.out_h * p.out_w;
  if (pixels == 0 || p.images == 0) return;
  const bool vec = p.images % 4 == 0 && aligned16(x) && aligned16(y);
  const PixelGrid g = pixel_grid(pixels, vec ? p.images / 4 : p.images);
  if (vec)
    CONVNET_LAUNCH(pool_fwd_kernel<float4>, g.grid, g.block, 0, current_stream(), p, x, y);
  else
    CONVNET_LAUNCH(pool_fwd_kernel<float>, g.grid, g.block, 0, current_stream(), p, x, y);
}

void pool_bwd_cuda(const PoolParams& p, const float* dy, const float* x, const float* y,
                   float* dx, bool accumulate) {
  const int64_t pixels = int64_t(p.channels) * p.height * p.width;
  if (pixels == 0 || p.images == 0) return;
  const PixelGrid g = pixel_grid(pixels, p.images);
  CONVNET_LAUNCH(pool_bwd_kernel, g.grid, g.block, 0, current_stream(), p, dy, x, y, dx,
                 accumulate);
}

}  // namespace convnet
