// Biases of conv, local and fc layers (declared in csrc/common/conv.h): y viewed as (filters,
// per_filter), one bias a row. Both kernels take a row's floats 4 at a time as one float4 when
// per_filter % 4 == 0 and the buffer is 16-byte aligned (kVec4), else one at a time, with the same
// float operations per element either way (the same bits), and index in the type I
// (index_width.cuh): int where the host has checked every offset stays below 2^31. The bias
// gradient's kernel also runs the fused ReLU + bias backward (csrc/common/relu_bias.h): it masks
// dy in place as it reads it, so the two ops sum in one order and give the same bits.
#include <algorithm>
#include <type_traits>

#include "conv.h"
#include "cuda_check.h"
#include "grid_stride.cuh"
#include "index_width.cuh"
#include "neuron.h"
#include "relu_bias.h"

namespace convnet {
namespace {

// y (F, per) += b: blocks in x over a row's floats (grid-stride), in y over the rows. Row offsets
// step by gridDim.y rows (row in floats, rowq in float4s): no multiply in the loop.
template <bool kVec4, class I>
__global__ void bias_fwd_kernel(float* __restrict__ y, const float* __restrict__ b, I filters,
                                I per) {
  const I step = I(gridDim.y) * per;
  I row = I(blockIdx.y) * per;
  // Rows one after another, not unrolled (no trip-count division of the 64-bit path).
#pragma unroll 1
  for (I f = blockIdx.y; f < filters; f += I(gridDim.y), row += step) {
    const float bf = b[f];
    const I rowq = row / 4;  // a multiple of 4 on the float4 path
    grid_stride_vec4<kVec4>(
        per,
        [&](I i) {
          float4* p = reinterpret_cast<float4*>(y) + (rowq + i);
          float4 v = *p;
          v.x += bf, v.y += bf, v.z += bf, v.w += bf;
          *p = v;
        },
        [&](I j) { y[row + j] += bf; });
  }
}

// db[f] (+)= sum of dy row f: one block per row (grid-stride over rows). Thread t sums the groups
// of 4 floats g = t, t + 256, ... of its row into 4 lane sums (a float4 load, or 4 scalar loads
// up to the row's end), adds them as (s0 + s1) + (s2 + s3), and the block adds the 256 thread
// sums by a shared-memory tree: a fixed order, so deterministic, and the same on both paths.
// kRelu: each element is first masked by the ReLU's gradient at y (neuron_bwd's relu: the same
// bits) and written back to dy, then summed; without it dy is only read (and y unused).
constexpr int kBiasThreads = 256;
template <bool kRelu>
using BiasGradPtr = std::conditional_t<kRelu, float*, const float*>;  // dy: written if masked
template <bool kVec4, bool kRelu, class I>
__global__ void __launch_bounds__(kBiasThreads)
    bias_bwd_kernel(BiasGradPtr<kRelu> __restrict__ dy, const float* __restrict__ y,
                    float* __restrict__ db, I filters, I per, bool accumulate) {
  using Relu = Neuron<NeuronKind::relu>;
  __shared__ float part[kBiasThreads];
  const I step = I(gridDim.x) * per;
  I row = I(blockIdx.x) * per;
#pragma unroll 1
  for (I f = blockIdx.x; f < filters; f += I(gridDim.x), row += step) {
    const I end = row + per;
    float s[4] = {0.f, 0.f, 0.f, 0.f};
    for (I o = row + 4 * I(threadIdx.x); o < end; o += 4 * kBiasThreads) {
      if (kVec4) {
        float4 v = *reinterpret_cast<const float4*>(dy + o);
        if constexpr (kRelu) {
          const float4 a = *reinterpret_cast<const float4*>(y + o);
          v.x *= Relu::grad(a.x, a.x, 0.f, 0.f), v.y *= Relu::grad(a.y, a.y, 0.f, 0.f);
          v.z *= Relu::grad(a.z, a.z, 0.f, 0.f), v.w *= Relu::grad(a.w, a.w, 0.f, 0.f);
          *reinterpret_cast<float4*>(dy + o) = v;
        }
        s[0] += v.x, s[1] += v.y, s[2] += v.z, s[3] += v.w;
      } else {
#pragma unroll
        for (int l = 0; l < 4; ++l)
          if (o + l < end) {
            float g = dy[o + l];
            if constexpr (kRelu) {
              g *= Relu::grad(y[o + l], y[o + l], 0.f, 0.f);
              dy[o + l] = g;
            }
            s[l] += g;
          }
      }
    }
    part[threadIdx.x] = (s[0] + s[1]) + (s[2] + s[3]);
    __syncthreads();
    for (int half = kBiasThreads / 2; half > 0; half /= 2) {
      if (int(threadIdx.x) < half) part[threadIdx.x] += part[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) db[f] = accumulate ? db[f] + part[0] : part[0];
    __syncthreads();  // part[] is rewritten for the next row
  }
}

// Offsets a launch over (filters, per) forms: up to the last row's end plus one step of rows past
// it (the row loop's exit) plus a grid-stride step of threads.
int64_t bias_span(int64_t filters, int64_t per, int64_t threads) {
  return (filters + std::min<int64_t>(filters, 65535)) * per + threads;
}

}  // namespace

void bias_fwd_cuda(float* y, const float* b, int64_t filters, int64_t per_filter) {
  if (filters == 0 || per_filter == 0) return;
  const bool vec = per_filter % 4 == 0 && aligned16(y);
  const unsigned gx = vec ? grid_for_quads(per_filter, 256) : grid_for(per_filter, 256, 64);
  const dim3 grid{std::min(gx, 64u), unsigned(std::min<int64_t>(filters, 65535))};
  with_index(bias_span(filters, per_filter, int64_t(grid.x) * 256), [&](auto index) {
    using I = decltype(index);
    if (vec)
      CONVNET_LAUNCH((bias_fwd_kernel<true, I>), grid, 256, 0, current_stream(), y, b,
                     I(filters), I(per_filter));
    else
      CONVNET_LAUNCH((bias_fwd_kernel<false, I>), grid, 256, 0, current_stream(), y, b,
                     I(filters), I(per_filter));
  });
}

template <bool kRelu>
static void launch_bias_bwd(BiasGradPtr<kRelu> dy, const float* y, float* db, int64_t filters,
                            int64_t per_filter, bool accumulate) {
  if (filters == 0) return;
  const bool vec = per_filter % 4 == 0 && aligned16(dy) && (!kRelu || aligned16(y));
  const unsigned grid = unsigned(std::min<int64_t>(filters, 65535));
  with_index(bias_span(filters, per_filter, 4 * kBiasThreads), [&](auto index) {
    using I = decltype(index);
    if (vec)
      CONVNET_LAUNCH((bias_bwd_kernel<true, kRelu, I>), grid, kBiasThreads, 0, current_stream(),
                     dy, y, db, I(filters), I(per_filter), accumulate);
    else
      CONVNET_LAUNCH((bias_bwd_kernel<false, kRelu, I>), grid, kBiasThreads, 0, current_stream(),
                     dy, y, db, I(filters), I(per_filter), accumulate);
  });
}

void bias_bwd_cuda(const float* dy, float* db, int64_t filters, int64_t per_filter,
                   bool accumulate) {
  launch_bias_bwd<false>(dy, nullptr, db, filters, per_filter, accumulate);
}

void relu_bias_bwd_cuda(float* dy, const float* y, float* db, int64_t filters, int64_t per_filter,
                        bool accumulate) {
  launch_bias_bwd<true>(dy, y, db, filters, per_filter, accumulate);
}

}  // namespace convnet
