// CUDA response normalisation (declared in csrc/common/lrn.h, maths and windows there).
// All buffers (C, H, W, N). Deterministic: no atomics; each output element is computed by one
// thread, with its sums in a fixed order (ascending channel; same-map: rows outer, columns inner
// — the CPU backend's order).
//
// Thread mapping (pixel_grid.h): one thread per (pixel, image), images consecutive in a warp, so
// every load and store coalesces.
//   cross-map: the pixels are the H*W of one plane and each thread loops over the channels. A
//     channel's window re-reads rows that the previous channels loaded (L1/L2 hits): x comes
//     from DRAM once.
//   same-map: the pixels are all C*H*W; each thread sums its size x size window (again served by
//     the caches after the first touch).
#include "cuda_check.h"
#include "lrn.h"
#include "pixel_grid.h"

namespace convnet {

// d^(-beta): AlexNet's beta = 0.75 as two reciprocal square roots, any other through __powf.
template <bool kThreeQuarters>
__device__ __forceinline__ float lrn_pow_neg(float d, float beta) {
  if (kThreeQuarters) return rsqrtf(d) * rsqrtf(sqrtf(d));
  return __powf(d, -beta);
}

template <bool kThreeQuarters>
__global__ void lrn_fwd_kernel(NormParams p, const float* __restrict__ x, float* __restrict__ y,
                               float* __restrict__ denoms) {
  const int64_t plane = int64_t(p.height) * p.width * p.images;
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n < p.images) {
    const int64_t i = int64_t(blockIdx.x) * p.images + n;
    for (int c = 0; c < p.channels; ++c) {
      const int first = norm_window_first(c, p.size);
      const int lo = max(0, first), hi = min(p.channels, first + p.size);
      float sum = 0.f;
      for (int j = lo; j < hi; ++j) {
        const float v = x[j * plane + i];
        sum += v * v;
      }
      const float d = p.min_div + p.alpha * sum;
      denoms[c * plane + i] = d;
      y[c * plane + i] = x[c * plane + i] * lrn_pow_neg<kThreeQuarters>(d, p.pow);
    }
  }
}

template <bool kThreeQuarters>
__global__ void lrn_bwd_kernel(NormParams p, const float* __restrict__ dy,
                               const float* __restrict__ x, const float* __restrict__ y,
                               const float* __restrict__ denoms, float* __restrict__ dx,
                               bool accumulate) {
  const int64_t plane = int64_t(p.height) * p.width * p.images;
  const float coef = -2.f * p.alpha * p.pow;
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n < p.images) {
    const int64_t i = int64_t(blockIdx.x) * p.images + n;
    for (int ch = 0; ch < p.channels; ++ch) {
      // Channels c whose windows contain ch: c - size/2 <= ch <= c - size/2 + size - 1.
      const int lo = max(0, ch - (p.size - 1 - p.size / 2));
      const int hi = min(p.channels, ch + p.size / 2 + 1);
      float sum = 0.f;
      for (int c = lo; c < hi; ++c) {
        const int64_t o = c * plane + i;
        sum += dy[o] * y[o] / denoms[o];
      }
      const int64_t o = ch * plane + i;
      const float g = dy[o] * lrn_pow_neg<kThreeQuarters>(denoms[o], p.pow) + coef * x[o] * sum;
      dx[o] = accumulate ? dx[o] + g : g;
    }
  }
}

template <bool kThreeQuarters>
__global__ void rnorm_fwd_kernel(NormParams p, const float* __restrict__ x, float* __restrict__ y,
                                 float* __restrict__ denoms) {
  const int N = p.images;
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n < N) {
    const int pix = blockIdx.x;  // (c, h, w)
    const int64_t i = int64_t(pix) * N + n;  // (c, h, w)
    const int w = pix % p.width, h = pix / p.width % p.height;
    const float* xc = x + (i - (int64_t(h) * p.width + w) * N);  // channel c, image n
    const int fy = norm_window_first(h, p.size), fx = norm_window_first(w, p.size);
    const int ylo = max(0, fy), yhi = min(p.height, fy + p.size);
    const int xlo = max(0, fx), xhi = min(p.width, fx + p.size);
    float sum = 0.f;
    for (int yy = ylo; yy < yhi; ++yy) {
      float row = 0.f;
      for (int xx = xlo; xx < xhi; ++xx) {
        const float v = xc[(int64_t(yy) * p.width + xx) * N];
        row += v * v;
      }
      sum += row;
    }
    const float d = p.min_div + p.alpha * sum;
    denoms[i] = d;
    y[i] = x[i] * lrn_pow_neg<kThreeQuarters>(d, p.pow);
  }
}

template <bool kThreeQuarters>
__global__ void rnorm_bwd_kernel(NormParams p, const float* __restrict__ dy,
                                 const float* __restrict__ x, const float* __restrict__ y,
                                 const float* __restrict__ denoms, float* __restrict__ dx,
                                 bool accumulate) {
  const int N = p.images;
  const float coef = -2.f * p.alpha * p.pow;
  const int back = p.size - 1 - p.size / 2, ahead = p.size / 2;  // reverse window
  const int n = blockIdx.y * blockDim.x + threadIdx.x;
  if (n < N) {
    const int pix = blockIdx.x;  // (c, h, w)
    const int64_t i = int64_t(pix) * N + n;
    const int w = pix % p.width, h = pix / p.width % p.height;
    const int64_t base = i - (int64_t(h) * p.width + w) * N;  // channel c, image n, pixel 0
    const int ylo = max(0, h - back), yhi = min(p.height, h + ahead + 1);
    const int xlo = max(0, w - back), xhi = min(p.width, w + ahead + 1);
    float sum = 0.f;
    for (int yy = ylo; yy < yhi; ++yy) {
      float row = 0.f;
      for (int xx = xlo; xx < xhi; ++xx) {
        const int64_t o = base + (int64_t(yy) * p.width + xx) * N;
        row += dy[o] * y[o] / denoms[o];
      }
      sum += row;
    }
    const float g = dy[i] * lrn_pow_neg<kThreeQuarters>(denoms[i], p.pow) + coef * x[i] * sum;
    dx[i] = accumulate ? dx[i] + g : g;
  }
}

namespace {
// Cross-map threads cover one plane's pixels; same-map threads every channel's.
PixelGrid lrn_grid(const NormParams& p) {
  return pixel_grid(int64_t(p.height) * p.width, p.images);
}
PixelGrid rnorm_grid(const NormParams& p) {
  return pixel_grid(int64_t(p.channels) * p.height * p.width, p.images);
}
bool empty_norm(const NormParams& p) {
  return int64_t(p.channels) * p.height * p.width * p.images == 0;
}
}  // namespace

void lrn_fwd_cuda(const NormParams& p, const float* x, float* y, float* denoms) {
  if (empty_norm(p)) return;
  const PixelGrid g = lrn_grid(p);
  if (p.pow == 0.75f)
    CONVNET_LAUNCH((lrn_fwd_kernel<true>), g.grid, g.block, 0, current_stream(), p, x, y, denoms);
  else
    CONVNET_LAUNCH((lrn_fwd_kernel<false>), g.grid, g.block, 0, current_stream(), p, x, y, denoms);
}

void lrn_bwd_cuda(const NormParams& p, const float* dy, const float* x, const float* y,
                  const float* denoms, float* dx, bool accumulate) {
  if (empty_norm(p)) return;
  const PixelGrid g = lrn_grid(p);
  if (p.pow == 0.75f)
    CONVNET_LAUNCH((lrn_bwd_kernel<true>), g.grid, g.block, 0, current_stream(), p, dy, x, y,
                   denoms, dx, accumulate);
  else
    CONVNET_LAUNCH((lrn_bwd_kernel<false>), g.grid, g.block, 0, current_stream(), p, dy, x, y,
                   denoms, dx, accumulate);
}

void rnorm_fwd_cuda(const NormParams& p, const float* x, float* y, float* denoms) {
  if (empty_norm(p)) return;
  const PixelGrid g = rnorm_grid(p);
  if (p.pow == 0.75f)
    CONVNET_LAUNCH((rnorm_fwd_kernel<true>), g.grid, g.block, 0, current_stream(), p, x, y,
                   denoms);
  else
    CONVNET_LAUNCH((rnorm_fwd_kernel<false>), g.grid, g.block, 0, current_stream(), p, x, y,
                   denoms);
}

void rnorm_bwd_cuda(const NormParams& p, const float* dy, const float* x, const float* y,
                    const float* denoms, float* dx, bool accumulate) {
  if (empty_norm(p)) return;
  const PixelGrid g = rnorm_grid(p);
  if (p.pow == 0.75f)
    CONVNET_LAUNCH((rnorm_bwd_kernel<true>), g.grid, g.block, 0, current_stream(), p, dy, x, y,
                   denoms, dx, accumulate);
  else
    CONVNET_LAUNCH((rnorm_bwd_kernel<false>), g.grid, g.block, 0, current_stream(), p, dy, x, y,
                   denoms, dx, accumulate);
}

}  // namespace convnet
