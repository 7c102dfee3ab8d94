// The FC data gradient as inner products (fc_dot_kernels.h): fc_bwd_data variant kFcDotVariant.
#pragma once
#include "fc.h"
#include "gemm_cpu.h"

namespace convnet {

// fc_bwd_data's variant after the micro-kernels: no pack of w (fc.cpp).
constexpr int kFcDotVariant = kGemmVariants;

// Variant 0 takes it up to this many images, where the pack of all of w that the SGEMM driver
// makes every call is shared by few images: one thread, thread CPU time, AMD Zen 4, fc7 (4096 x
// 4096) and fc8 (4096 x 1000): at 1 / 4 / 16 / 32 images 4.1-5.5 / 3.0-5.3 / 1.5-2.4 /
// 1.03-1.34x as fast at AVX-512 and AVX2; at 64, 0.86-1.10x; at 128, 0.84-0.99x (fc6, fc7).
constexpr int64_t kFcDotMaxImages = 32;

// dx (I, N) (+)= w (I, O) dy (O, N), on the process's SIMD path (cpu_isa()).
void fc_bwd_data_dot(const FcParams& p, const float* dy, const float* w, float* dx,
                     bool accumulate);

}  // namespace convnet
