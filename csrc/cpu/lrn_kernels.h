// CPU response normalisation, compiled once per SIMD path: lrn.cpp (baseline x86-64),
// lrn_avx2.cpp and lrn_avx512.cpp include this file, and lrn.cpp picks one at run time
// (csrc/cpu/isa.h).
// Everything is vectorised over the contiguous (H, W, N) plane of a channel; see csrc/common/lrn.h
// for the maths and the windows.
//
// Cross-map, forward (all layouts (C, H, W, N), plane = H*W*N):
//   Threads split the plane into cache-line-aligned ranges; each walks its range in tiles of
//   kTile floats and, per tile, goes through the channels in order. The window sum for channel c
//   reads the `size` rows x[lo..hi) of the tile, which the previous channels brought into L1, so
//   every x is read from memory once and y, denoms are written once: 12 bytes per element.
//   Sums are taken in ascending channel order, like the CUDA kernel.
// Cross-map, backward: per tile, r_c = dy_c * y_c / d_c is computed once per channel into a ring
//   of `size` rows, and dx_i sums r over the channels whose windows contain i. Reads dy, x, y,
//   denoms once from memory, writes dx once: 20 bytes per element (24 when accumulating).
// Same-map: per channel (threads split channels), a separable window sum — each row's sum over
//   the column window into a plane buffer, then the sum of those over the row window.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "lrn.h"
#include "norm_math.h"
#include "isa.h"
#include "parallel.h"

namespace convnet {
namespace {

constexpr int64_t kTile = 8192;  // floats per tile row (32 KB): the window's rows stay in L2

inline int64_t norm_plane(const NormParams& p) {
  return int64_t(p.height) * p.width * p.images;
}

// The window [lo, hi) of position c along an axis of length n.
inline void norm_window(int c, int size, int n, int* lo, int* hi) {
  int first = norm_window_first(c, size);
  *lo = std::max(0, first);
  *hi = std::min(n, first + size);
}

// The positions [lo, hi) whose windows contain i: first(j) <= i < first(j) + size.
inline void norm_reverse_window(int i, int size, int n, int* lo, int* hi) {
  *lo = std::max(0, i - (size - 1 - size / 2));
  *hi = std::min(n, i + size / 2 + 1);
}

// sum[0..n) = sum over rows j in [lo, hi) of (row j)^2, rows `stride` floats apart, j ascending.
inline void sum_squares(float* __restrict sum, const float* __restrict x, int64_t stride, int lo,
                        int hi, int64_t n) {
  const float* r = x + lo * stride;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) sum[i] = r[i] * r[i];
  for (int j = lo + 1; j < hi; ++j) {
    r = x + j * stride;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) sum[i] += r[i] * r[i];
  }
}

// sum[0..n) = sum over rows j in [lo, hi) of row j, rows `stride` floats apart, j ascending.
inline void sum_rows(float* __restrict sum, const float* __restrict x, int64_t stride, int lo,
                     int hi, int64_t n) {
  const float* r = x + lo * stride;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) sum[i] = r[i];
  for (int j = lo + 1; j < hi; ++j) {
    r = x + j * stride;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) sum[i] += r[i];
  }
}

NORM_FAST_MATH_BEGIN
// The element loops that call pow_neg (or divide) run kPowLanes = 8 floats at a time, a fixed
// count, whatever the path's vector width: at 256 bits GCC takes 1/sqrt(x) from one approximation
// (rsqrtps) and a Newton step; at 512 bits it takes sqrt(x) and then 1/x from two (vrsqrt14ps,
// vrcp14ps) with about as many instructions per float, and where 512-bit operations are split in
// two halves (Zen 4) that loop ran 1.6x slower per float (BENCHMARKS.md). (A simdlen(8) clause
// is dropped by the link-time optimiser; a fixed trip count is not.) A loop's last n % 8
// elements go through the same lanes in padded local blocks, so every element takes the same
// operations wherever it lies.
constexpr int64_t kPowLanes = 8;

// block[0, kPowLanes) = src[0, count), then `pad` (a value the lanes can take harmlessly).
inline void tail_in(float* block, const float* src, int64_t count, float pad) {
  for (int64_t l = 0; l < kPowLanes; ++l) block[l] = l < count ? src[l] : pad;
}

inline void tail_out(float* dst, const float* block, int64_t count) {
  for (int64_t l = 0; l < count; ++l) dst[l] = block[l];
}

// y = x * d^-beta, d = k + alpha * sum, for kPowLanes elements.
template <PowKind K>
inline void norm_out_lanes(float* __restrict y, float* __restrict d, const float* __restrict x,
                           const float* __restrict sum, float k, float alpha, float beta) {
#pragma omp simd
  for (int64_t l = 0; l < kPowLanes; ++l) {
    float dv = k + alpha * sum[l];
    d[l] = dv;
    y[l] = x[l] * pow_neg<K>(dv, beta);
  }
}

// norm_out_lanes over n elements.
template <PowKind K>
inline void norm_out(float* y, float* d, const float* x, const float* sum, int64_t n, float k,
                     float alpha, float beta) {
  int64_t i = 0;
  for (; i + kPowLanes <= n; i += kPowLanes)
    norm_out_lanes<K>(y + i, d + i, x + i, sum + i, k, alpha, beta);
  if (i == n) return;
  alignas(32) float yb[kPowLanes], db[kPowLanes], xb[kPowLanes], sb[kPowLanes];
  tail_in(xb, x + i, n - i, 0.f);
  tail_in(sb, sum + i, n - i, 0.f);
  norm_out_lanes<K>(yb, db, xb, sb, k, alpha, beta);
  tail_out(y + i, yb, n - i);
  tail_out(d + i, db, n - i);
}

// r = dy * y / d for kPowLanes elements.
inline void norm_ratio_lanes(float* __restrict r, const float* __restrict dy,
                             const float* __restrict y, const float* __restrict d) {
#pragma omp simd
  for (int64_t l = 0; l < kPowLanes; ++l) r[l] = dy[l] * y[l] / d[l];
}

// norm_ratio_lanes over n elements.
inline void norm_ratio(float* r, const float* dy, const float* y, const float* d, int64_t n) {
  int64_t i = 0;
  for (; i + kPowLanes <= n; i += kPowLanes) norm_ratio_lanes(r + i, dy + i, y + i, d + i);
  if (i == n) return;
  alignas(32) float rb[kPowLanes], gb[kPowLanes], yb[kPowLanes], db[kPowLanes];
  tail_in(gb, dy + i, n - i, 0.f);
  tail_in(yb, y + i, n - i, 0.f);
  tail_in(db, d + i, n - i, 1.f);
  norm_ratio_lanes(rb, gb, yb, db);
  tail_out(r + i, rb, n - i);
}

// dx (+)= dy * d^-beta + c x sum (c = -2 alpha beta) for kPowLanes elements.
template <PowKind K, bool accumulate>
inline void norm_grad_lanes(float* __restrict dx, const float* __restrict dy,
                            const float* __restrict x, const float* __restrict d,
                            const float* __restrict sum, float c, float beta) {
#pragma omp simd
  for (int64_t l = 0; l < kPowLanes; ++l) {
    const float g = dy[l] * pow_neg<K>(d[l], beta) + c * x[l] * sum[l];
    dx[l] = accumulate ? dx[l] + g : g;
  }
}

// dx (+)= dy * d^-beta - 2 alpha beta x sum, for n elements.
template <PowKind K, bool accumulate>
inline void norm_grad_n(float* dx, const float* dy, const float* x, const float* d,
                        const float* sum, int64_t n, float c, float beta) {
  int64_t i = 0;
  for (; i + kPowLanes <= n; i += kPowLanes)
    norm_grad_lanes<K, accumulate>(dx + i, dy + i, x + i, d + i, sum + i, c, beta);
  if (i == n) return;
  alignas(32) float xb[kPowLanes], gb[kPowLanes], vb[kPowLanes], db[kPowLanes], sb[kPowLanes];
  tail_in(xb, dx + i, n - i, 0.f);
  tail_in(gb, dy + i, n - i, 0.f);
  tail_in(vb, x + i, n - i, 0.f);
  tail_in(db, d + i, n - i, 1.f);
  tail_in(sb, sum + i, n - i, 0.f);
  norm_grad_lanes<K, accumulate>(xb, gb, vb, db, sb, c, beta);
  tail_out(dx + i, xb, n - i);
}

template <PowKind K>
inline void norm_grad(float* dx, const float* dy, const float* x, const float* d,
                      const float* sum, int64_t n, float alpha, float beta, bool accumulate) {
  const float c = -2.f * alpha * beta;
  if (accumulate) norm_grad_n<K, true>(dx, dy, x, d, sum, n, c, beta);
  else norm_grad_n<K, false>(dx, dy, x, d, sum, n, c, beta);
}
NORM_FAST_MATH_END

void lrn_fwd_impl(const NormParams& p, const float* x, float* y, float* denoms) {
  const int64_t plane = norm_plane(p);
  const int C = p.channels;
  with_pow_kind(p.pow, [&](auto kind) {
    constexpr PowKind K = decltype(kind)::value;
    parallel_range(plane, [&](int64_t b, int64_t e) {
      alignas(64) float sum[kTile];
      for (int64_t t = b; t < e; t += kTile) {
        const int64_t n = std::min(kTile, e - t);
        for (int c = 0; c < C; ++c) {
          int lo, hi;
          norm_window(c, p.size, C, &lo, &hi);
          sum_squares(sum, x + t, plane, lo, hi, n);
          const int64_t o = c * plane + t;
          norm_out<K>(y + o, denoms + o, x + o, sum, n, p.min_div, p.alpha, p.pow);
        }
      }
    }, std::max<int64_t>(1, kMinParallelWork / C));
  });
}

void lrn_bwd_impl(const NormParams& p, const float* dy, const float* x, const float* y,
                  const float* denoms, float* dx, bool accumulate) {
  const int64_t plane = norm_plane(p);
  const int C = p.channels, size = p.size;
  with_pow_kind(p.pow, [&](auto kind) {
    constexpr PowKind K = decltype(kind)::value;
    parallel_range(plane, [&](int64_t b, int64_t e) {
      std::vector<float> ring(size_t(size) * kTile);  // r_c in row c % size
      alignas(64) float sum[kTile];
      for (int64_t t = b; t < e; t += kTile) {
        const int64_t n = std::min(kTile, e - t);
        int next = 0;  // first channel whose r is not in the ring yet
        for (int i = 0; i < C; ++i) {
          int lo, hi;
          norm_reverse_window(i, size, C, &lo, &hi);
          for (; next < hi; ++next) {
            const int64_t o = next * plane + t;
            norm_ratio(&ring[size_t(next % size) * kTile], dy + o, y + o, denoms + o, n);
          }
          float* s = sum;
          const float* r = &ring[size_t(lo % size) * kTile];
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) s[k] = r[k];
          for (int c = lo + 1; c < hi; ++c) {
            r = &ring[size_t(c % size) * kTile];
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) s[k] += r[k];
          }
          const int64_t o = i * plane + t;
          norm_grad<K>(dx + o, dy + o, x + o, denoms + o, sum, n, p.alpha, p.pow, accumulate);
        }
      }
    }, std::max<int64_t>(1, kMinParallelWork / C));
  });
}

// Same-map: one channel at a time per thread, with a per-thread buffer of two planes and a row.
// rowsum (H, W, N) = for each pixel, the sum of src (squared when `square`) over the pixel's
// column window (`reverse`: the columns whose windows contain it); the callers then sum rowsum
// over the row window, so sums run rows outer, columns inner (like the CUDA kernel).
template <bool square>
void rnorm_row_sums(const NormParams& p, bool reverse, const float* src, float* rowsum) {
  const int64_t N = p.images, row = int64_t(p.width) * N;
  for (int h = 0; h < p.height; ++h)
    for (int w = 0; w < p.width; ++w) {
      int lo, hi;
      if (reverse) norm_reverse_window(w, p.size, p.width, &lo, &hi);
      else norm_window(w, p.size, p.width, &lo, &hi);
      if (square) sum_squares(rowsum + h * row + w * N, src + h * row, N, lo, hi, N);
      else sum_rows(rowsum + h * row + w * N, src + h * row, N, lo, hi, N);
    }
}

template <class F>
void for_each_channel(const NormParams& p, F&& f) {
  const int64_t plane = norm_plane(p), row = int64_t(p.width) * p.images;
  const int64_t work = p.channels * plane;
  const int threads = work < kMinParallelWork ? 1 : std::min(omp_get_max_threads(), p.channels);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> buf(size_t(2 * plane + row));
#pragma omp for schedule(static)
    for (int c = 0; c < p.channels; ++c) f(c, buf.data(), buf.data() + plane,
                                          buf.data() + 2 * plane);
  }
}

void rnorm_fwd_impl(const NormParams& p, const float* x, float* y, float* denoms) {
  const int64_t plane = norm_plane(p), row = int64_t(p.width) * p.images;
  with_pow_kind(p.pow, [&](auto kind) {
    constexpr PowKind K = decltype(kind)::value;
    for_each_channel(p, [&](int c, float* rowsum, float*, float* sum) {
      const int64_t o = c * plane;
      rnorm_row_sums<true>(p, false, x + o, rowsum);
      for (int h = 0; h < p.height; ++h) {
        int lo, hi;
        norm_window(h, p.size, p.height, &lo, &hi);
        sum_rows(sum, rowsum, row, lo, hi, row);
        const int64_t oh = o + h * row;
        norm_out<K>(y + oh, denoms + oh, x + oh, sum, row, p.min_div, p.alpha, p.pow);
      }
    });
  });
}

void rnorm_bwd_impl(const NormParams& p, const float* dy, const float* x, const float* y,
                    const float* denoms, float* dx, bool accumulate) {
  const int64_t plane = norm_plane(p), row = int64_t(p.width) * p.images;
  with_pow_kind(p.pow, [&](auto kind) {
    constexpr PowKind K = decltype(kind)::value;
    for_each_channel(p, [&](int c, float* ratio, float* rowsum, float* sum) {
      const int64_t o = c * plane;
      norm_ratio(ratio, dy + o, y + o, denoms + o, plane);
      rnorm_row_sums<false>(p, true, ratio, rowsum);
      for (int h = 0; h < p.height; ++h) {
        int lo, hi;
        norm_reverse_window(h, p.size, p.height, &lo, &hi);
        sum_rows(sum, rowsum, row, lo, hi, row);
        const int64_t oh = o + h * row;
        norm_grad<K>(dx + oh, dy + oh, x + oh, denoms + oh, sum, row, p.alpha, p.pow,
                     accumulate);
      }
    });
  });
}

}  // namespace

// The entry points of one SIMD path's build, in namespace `isa`: declared here with
// CONVNET_DECLARE_ENTRY, defined in lrn_<isa>.cpp with CONVNET_DEFINE_ENTRY (isa.h).
#define CONVNET_NORM_ENTRY_POINTS(isa, ENTRY)                                                 \
  namespace isa {                                                                           \
  void lrn_fwd(const NormParams& p, const float* x, float* y, float* denoms)                \
      ENTRY(lrn_fwd_impl(p, x, y, denoms))                                                  \
  void lrn_bwd(const NormParams& p, const float* dy, const float* x, const float* y,        \
               const float* denoms, float* dx, bool accumulate)                             \
      ENTRY(lrn_bwd_impl(p, dy, x, y, denoms, dx, accumulate))                              \
  void rnorm_fwd(const NormParams& p, const float* x, float* y, float* denoms)              \
      ENTRY(rnorm_fwd_impl(p, x, y, denoms))                                                \
  void rnorm_bwd(const NormParams& p, const float* dy, const float* x, const float* y,      \
                 const float* denoms, float* dx, bool accumulate)                           \
      ENTRY(rnorm_bwd_impl(p, dy, x, y, denoms, dx, accumulate))                            \
  }

CONVNET_NORM_ENTRY_POINTS(avx512, CONVNET_DECLARE_ENTRY)
CONVNET_NORM_ENTRY_POINTS(avx2, CONVNET_DECLARE_ENTRY)

}  // namespace convnet
