// L consecutive images of one (..., pixel, N) activation handled by one thread, as an array of L
// floats: L = 4 moves them with one 128-bit load or store (the caller has checked N % 4 == 0 and
// 16-byte aligned buffers on the host), L = 1 is the scalar path. A kernel written over lanes
// does the same float operations on each lane in both paths, in the same order, so the vector
// and scalar launches give the same bits (tests/test_lrn.py and test_pool.py compare them).
#pragma once
#include "cuda_check.h"

namespace convnet {

template <int L>
struct Lanes {
  static_assert(L == 1 || L == 4, "a thread takes 1 or 4 images");
  float v[L];

  __device__ __forceinline__ static Lanes load(const float* p) {
    Lanes r;
    if constexpr (L == 4) {
      const float4 q = *reinterpret_cast<const float4*>(p);
      r.v[0] = q.x, r.v[1] = q.y, r.v[2] = q.z, r.v[3] = q.w;
    } else {
      r.v[0] = *p;
    }
    return r;
  }
  __device__ __forceinline__ static Lanes fill(float value) {
    Lanes r;
#pragma unroll
    for (int l = 0; l < L; ++l) r.v[l] = value;
    return r;
  }
  __device__ __forceinline__ void store(float* p) const {
    if constexpr (L == 4)
      *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else
      *p = v[0];
  }
};

}  // namespace convnet
