// The thread mapping of the flat memory-bound kernels (elementwise, neurons, the SGD update, the
// conv weight gradient's partial sums, biases): a grid-stride loop over groups of 4 consecutive
// floats, each group handled as one float4 when every buffer is 16-byte aligned (kVec4), then
// the n % 4 trailing floats (or, unaligned, every float) one at a time, the trailing ones going to
// the first threads of the grid. The index type I is n's: int64_t (a buffer may hold 2^31 floats
// or more) or int where the host has checked n plus the grid's threads stay below 2^31
// (index_width.cuh), so the loop counts in 32 bits.
//   quad(i)    group i: floats 4i .. 4i+3, as float4 index i
//   single(j)  float j
#pragma once
#include <cstdint>

#include "cuda_check.h"

namespace convnet {

template <bool kVec4, class I, class Quad, class Single>
__device__ __forceinline__ void grid_stride_vec4(I n, Quad&& quad, Single&& single) {
  const I tid = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x);
  const I stride = I(gridDim.x) * I(blockDim.x);
  I done = 0;
  if constexpr (sizeof(I) == 8) {
    // Not unrolled: the unroller's trip count, (n - i) / stride, would be a 64-bit division (a
    // CALL) before each loop, inside any loop around this one.
    if constexpr (kVec4) {
      done = 4 * (n / 4);
#pragma unroll 1
      for (I i = tid; i < done / 4; i += stride) quad(i);
    }
#pragma unroll 1
    for (I j = done + tid; j < n; j += stride) single(j);
  } else {
    if constexpr (kVec4) {
      done = 4 * (n / 4);
      for (I i = tid; i < done / 4; i += stride) quad(i);
    }
    for (I j = done + tid; j < n; j += stride) single(j);
  }
}

// Blocks for a grid-stride launch over n floats in groups of 4.
inline unsigned grid_for_quads(int64_t n, int threads) { return grid_for((n + 3) / 4, threads); }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace convnet
