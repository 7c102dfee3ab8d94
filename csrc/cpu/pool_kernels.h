// CPU pooling, compiled once per SIMD path: pool.cpp (baseline x86-64), pool_avx2.cpp and
// pool_avx512.cpp include this file, and pool.cpp picks one at run time (csrc/cpu/isa.h). Every
// inner loop runs over the N contiguous images of one pixel. See csrc/common/pool.h for windows
// and tie rules.
//
// Forward: threads split the (channel, output row) pairs; each output pixel reduces its window's
//   rows of N images (read from cache after the first touch: overlapping windows re-read x from
//   L1/L2, never from memory). Bytes from memory: x once, y once.
// Backward: threads split channels, so each dx plane has one writer; within a channel the outputs
//   are visited in row-major order and scatter into dx. Input rows are zeroed just before the
//   first output row that touches them, so the plane is written while in cache. Max: per image, dy
//   goes to the first window pixel (row-major) whose x equals y — the tie rule — tracked by an
//   integer mask (integer selects keep the loop vectorised), 16 images at a time over the whole
//   window so the mask stays in registers (route_max). Avg: dy / (pixels in the window).
//   With db (pool_bwd_relu_bias, csrc/common/relu_bias.h): x is a layer's output after its ReLU,
//   and each channel's finished dx plane, still in L2, is masked by x > 0 and summed into db[c]
//   by relu_bias_row: the bits of relu_bias_bwd run after the pooling, one pass over memory less.
//   Max masks as it routes (a winner's x is y), so its plane is only summed (bias_row): no second
//   read of x nor store of dx.
// Winners (pool.h): the max forward records them in blocks of one register's images over the
//   whole window (max_with_winner, state in registers); the backward then routes by offset
//   (route_winners), reading dy and one byte per output instead of x and y: the same masked
//   adds, the same bits.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "isa.h"
#include "parallel.h"
#include "pool.h"
#include "pool_lanes.h"
#include "relu_bias_row.h"

namespace convnet {
namespace {

// Images per block of the max backward's routing by comparing x with y: one AVX-512 vector, two
// AVX2 ones.
constexpr int64_t kRouteLanes = 16;

// Registers of images per block of the max forward with winners: each register's running max
// is a chain of dependent compares and selects through the window; four chains interleaved
// keep the vector units busy where one waited on its own latency (0.7x of the plain forward).
constexpr int kWinnerRegs = 4;

// The max forward recording winners (pool.h) for one output: R whole registers of images (R > 0)
// or the first `lanes` images of one (R == 0, a partial block). The running max takes the plain
// forward's select (the same y bits), and the winner moves only when a pixel is strictly
// greater — the first pixel equal to the final max. x points at the window's first pixel;
// pixels are `pixel` floats apart, rows `row`.
template <int R>
void max_with_winner(const float* x, float* yo, uint8_t* wo, int64_t lanes, int rows, int cols,
                     int64_t row, int64_t pixel) {
  constexpr int L = R > 0 ? kSimdFloats : 0, regs = R > 0 ? R : 1;
  const size_t n = size_t(lanes);
  PoolVec best[regs];
  PoolInts at[regs];
#pragma GCC unroll 8
  for (int r = 0; r < regs; ++r) {
    best[r] = load_floats<L>(x + r * kSimdFloats, n);
    at[r] = PoolInts{};
  }
  int32_t offset = 0;
  for (int iy = 0; iy < rows; ++iy)
    for (int ix = iy == 0 ? 1 : 0; ix < cols; ++ix) {
      const float* in = x + iy * row + ix * pixel;
      const PoolInts k = PoolInts{} + ++offset;
#pragma GCC unroll 8
      for (int r = 0; r < regs; ++r) {
        const PoolVec v = load_floats<L>(in + r * kSimdFloats, n);
        at[r] = select_later(v > best[r], k, at[r]);
        best[r] = select_max(v, best[r]);
      }
    }
  const PoolInts none = PoolInts{} + kPoolNoWinner, zero = {};
#pragma GCC unroll 8
  for (int r = 0; r < regs; ++r) {
    const PoolInts sign = (PoolInts)best[r] > zero ? zero : zero + kPoolNotPositive;
    store_floats<L>(yo + r * kSimdFloats, best[r], n);
    store_bytes<L>(wo + r * kSimdFloats, (best[r] == best[r] ? at[r] : none) | sign, n);
  }
}

// winners: null, or the max pool's winners to record (pool.h).
void pool_fwd_impl(const PoolParams& p, const float* x, float* y, uint8_t* winners) {
  const int64_t N = p.images, plane = int64_t(p.height) * p.width * N;
  const int64_t rows = int64_t(p.channels) * p.out_h;
  const int64_t work = rows * p.out_w * N * p.size * p.size;
#pragma omp parallel for schedule(static) if (work >= kMinParallelWork && omp_get_max_threads() > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int c = int(r / p.out_h), oy = int(r % p.out_h);
    int ylo, yhi;
    pool_window(oy, p.size, p.stride, p.start, p.height, &ylo, &yhi);
    const float* xc = x + c * plane;
    float* yr = y + r * p.out_w * N;
    for (int ox = 0; ox < p.out_w; ++ox) {
      int xlo, xhi;
      pool_window(ox, p.size, p.stride, p.start, p.width, &xlo, &xhi);
      float* __restrict out = yr + ox * N;
      const float* first = xc + (int64_t(ylo) * p.width + xlo) * N;
      if (winners) {
        uint8_t* wr = winners + (r * p.out_w + ox) * N;
        // Blocks of kWinnerRegs registers, then of one, then the images left.
        constexpr int64_t block = kWinnerRegs * kSimdFloats;
        const int64_t blocks = N / block * block, whole = N / kSimdFloats * kSimdFloats;
        const int64_t in_row = int64_t(p.width) * N;
        for (int64_t n0 = 0; n0 < blocks; n0 += block)
          max_with_winner<kWinnerRegs>(first + n0, out + n0, wr + n0, block, yhi - ylo,
                                       xhi - xlo, in_row, N);
        for (int64_t n0 = blocks; n0 < whole; n0 += kSimdFloats)
          max_with_winner<1>(first + n0, out + n0, wr + n0, kSimdFloats, yhi - ylo, xhi - xlo,
                             in_row, N);
        if (whole < N)
          max_with_winner<0>(first + whole, out + whole, wr + whole, N - whole, yhi - ylo,
                             xhi - xlo, in_row, N);
        continue;
      }
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) out[n] = first[n];
      for (int iy = ylo; iy < yhi; ++iy)
        for (int ix = (iy == ylo ? xlo + 1 : xlo); ix < xhi; ++ix) {
          const float* __restrict in = xc + (int64_t(iy) * p.width + ix) * N;
          if (p.mode == PoolMode::max) {
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) out[n] = in[n] > out[n] ? in[n] : out[n];
          } else {
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) out[n] += in[n];
          }
        }
      if (p.mode == PoolMode::avg) {
        const float inv = 1.f / float((yhi - ylo) * (xhi - xlo));
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) out[n] *= inv;
      }
    }
  }
}

// The max pool's backward for one output and `lanes` images (L of them when L > 0, a
// compile-time count whose mask the compiler keeps in registers; else any count, the mask in
// `done`): each image's dy goes to the first window pixel (row-major) whose x equals y. x and
// d point at the window's first pixel; pixels are `pixel` floats apart, rows `row`.
// relu: x is a ReLU's output and dx is masked by x > 0 as relu_bias_row masks it: the winner's x
// is y, so images whose y fails the mask route nothing (marked done from the start).
template <int L>
void route_max(const float* __restrict g, const float* __restrict yo, const float* x, float* d,
               int64_t lanes, int rows, int cols, int64_t row, int64_t pixel, bool relu,
               int32_t* done) {
  int32_t local[L > 0 ? L : 1];
  int32_t* __restrict dn = L > 0 ? local : done;
  const int64_t n_end = L > 0 ? L : lanes;
  const int32_t gate = relu ? -1 : 0;
#pragma omp simd
  for (int64_t n = 0; n < n_end; ++n)
    dn[n] = gate & ~-int32_t(__builtin_bit_cast(int32_t, yo[n]) > 0);
  for (int iy = 0; iy < rows; ++iy)
    for (int ix = 0; ix < cols; ++ix) {
      const int64_t i = iy * row + ix * pixel;
      const float* __restrict in = x + i;
      float* __restrict di = d + i;
#pragma omp simd
      for (int64_t n = 0; n < n_end; ++n) {
        int32_t hit = -int32_t(in[n] == yo[n]) & ~dn[n];
        dn[n] |= hit;
        di[n] += __builtin_bit_cast(float, __builtin_bit_cast(int32_t, g[n]) & hit);
      }
    }
}

// route_max's routing from the winners the forward recorded (pool.h): image n's dy goes to the
// window pixel whose offset is its winner's, by the same masked adds (the same dx bits). relu:
// winners marked kPoolNotPositive route nothing, as route_max's gate.
template <int L>
void route_winners(const float* g, const uint8_t* wo, float* d, int64_t lanes, int rows,
                   int cols, int64_t row, int64_t pixel, bool relu) {
  const size_t n = size_t(lanes);
  const PoolInts used = PoolInts{} + (relu ? 0xff : kPoolNoWinner);  // with the bit: no offset
  const PoolInts key = load_bytes<L>(wo, n) & used;
  const PoolInts grad = (PoolInts)load_floats<L>(g, n);
  int32_t offset = 0;
  for (int iy = 0; iy < rows; ++iy)
    for (int ix = 0; ix < cols; ++ix, ++offset) {
      float* di = d + iy * row + ix * pixel;
      const PoolInts hit = key == (PoolInts{} + offset);
      store_floats<L>(di, load_floats<L>(di, n) + (PoolVec)(grad & hit), n);
    }
}

// db: null, or the bias gradient of the layer whose ReLU output x is (then !accumulate).
// winners: null (max: route by comparing x with y), or the forward's (then x and y unused).
void pool_bwd_impl(const PoolParams& p, const float* dy, const float* x, const float* y,
                   const uint8_t* winners, float* dx, bool accumulate, float* db) {
  const int64_t N = p.images, row = int64_t(p.width) * N, plane = p.height * row;
  const int64_t oplane = int64_t(p.out_h) * p.out_w * N;
  const int64_t work = int64_t(p.channels) * (plane + oplane * p.size * p.size);
  const int threads = work < kMinParallelWork ? 1 : std::min(omp_get_max_threads(), p.channels);
#pragma omp parallel num_threads(threads)
  {
    // max: all bits set once image n's dy is routed; avg: dy / pixels in the window.
    std::vector<int32_t> done(static_cast<size_t>(N));
    std::vector<float> grad(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int c = 0; c < p.channels; ++c) {
      const float* xc = x ? x + c * plane : nullptr;
      float* dxc = dx + c * plane;
      int zeroed = 0;  // rows of dxc below this are zero (or hold the accumulated gradient)
      for (int oy = 0; oy < p.out_h; ++oy) {
        int ylo, yhi;
        pool_window(oy, p.size, p.stride, p.start, p.height, &ylo, &yhi);
        if (!accumulate && yhi > zeroed) {
          std::fill(dxc + zeroed * row, dxc + yhi * row, 0.f);
          zeroed = yhi;
        }
        for (int ox = 0; ox < p.out_w; ++ox) {
          int xlo, xhi;
          pool_window(ox, p.size, p.stride, p.start, p.width, &xlo, &xhi);
          const int64_t o = c * oplane + (int64_t(oy) * p.out_w + ox) * N;
          const float* __restrict g = dy + o;
          if (p.mode == PoolMode::max) {
            const int64_t base = int64_t(ylo) * row + int64_t(xlo) * N;
            if (winners) {  // registers of images, then the images left
              const uint8_t* wo = winners + o;
              const int64_t whole = N / kSimdFloats * kSimdFloats;
              for (int64_t n0 = 0; n0 < whole; n0 += kSimdFloats)
                route_winners<kSimdFloats>(g + n0, wo + n0, dxc + base + n0, kSimdFloats,
                                            yhi - ylo, xhi - xlo, row, N, db != nullptr);
              if (whole < N)
                route_winners<0>(g + whole, wo + whole, dxc + base + whole, N - whole, yhi - ylo,
                                 xhi - xlo, row, N, db != nullptr);
              continue;
            }
            // Blocks of kRouteLanes images, each over the whole window, so a block's dy, y and
            // routed mask stay in registers; then the images past the last whole block.
            const int64_t whole = N / kRouteLanes * kRouteLanes;
            const float* yo = y + o;
            for (int64_t n0 = 0; n0 < whole; n0 += kRouteLanes)
              route_max<kRouteLanes>(g + n0, yo + n0, xc + base + n0, dxc + base + n0,
                                     kRouteLanes, yhi - ylo, xhi - xlo, row, N, db != nullptr,
                                     done.data());
            if (whole < N)
              route_max<0>(g + whole, yo + whole, xc + base + whole, dxc + base + whole,
                           N - whole, yhi - ylo, xhi - xlo, row, N, db != nullptr, done.data());
          } else {
            const float inv = 1.f / float((yhi - ylo) * (xhi - xlo));
            float* __restrict gs = grad.data();
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) gs[n] = g[n] * inv;
            for (int iy = ylo; iy < yhi; ++iy)
              for (int ix = xlo; ix < xhi; ++ix) {
                float* __restrict d = dxc + int64_t(iy) * row + int64_t(ix) * N;
#pragma omp simd
                for (int64_t n = 0; n < N; ++n) d[n] += gs[n];
              }
          }
        }
      }
      // Rows no window reaches (when stride > size) get no gradient.
      if (!accumulate) std::fill(dxc + zeroed * row, dxc + plane, 0.f);
      // Max: dx is masked already (route_max), only summed; avg: masked here.
      if (db && p.mode == PoolMode::max) bias_row(dxc, plane, db + c);
      else if (db) relu_bias_row(dxc, xc, plane, db + c);
    }
  }
}

}  // namespace

// The entry points of one SIMD path's build, in namespace `isa`: declared here with
// CONVNET_DECLARE_ENTRY, defined in pool_<isa>.cpp with CONVNET_DEFINE_ENTRY (isa.h).
#define CONVNET_POOL_ENTRY_POINTS(isa, ENTRY)                                                 \
  namespace isa {                                                                           \
  void pool_fwd(const PoolParams& p, const float* x, float* y, uint8_t* winners)           \
      ENTRY(pool_fwd_impl(p, x, y, winners))                                                \
  void pool_bwd(const PoolParams& p, const float* dy, const float* x, const float* y,       \
                const uint8_t* winners, float* dx, bool accumulate, float* db)              \
      ENTRY(pool_bwd_impl(p, dy, x, y, winners, dx, accumulate, db))                        \
  }

CONVNET_POOL_ENTRY_POINTS(avx512, CONVNET_DECLARE_ENTRY)
CONVNET_POOL_ENTRY_POINTS(avx2, CONVNET_DECLARE_ENTRY)

}  // namespace convnet
