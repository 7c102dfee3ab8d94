// One declaration per op: CONVNET_OP(void, relu_fwd, (const float* x, float* y, int64_t n))
// declares relu_fwd_cpu (csrc/cpu/) and relu_fwd_cuda (csrc/cuda/, also the emulated backend) with
// the same signature. Launchers take raw pointers plus a params struct; the bindings check shapes,
// dtypes and devices before calling them.
#pragma once
#include <cstdint>

#include "hd.h"

#define CONVNET_OP(ret, name, args) \
  ret name##_cpu args;              \
  ret name##_cuda args;
