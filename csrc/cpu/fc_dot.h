// The FC data gradient as inner products (fc_dot_kernels.h): fc_bwd_data variant kFcDotVariant.
#pragma once
#include "fc.h"
#include "gemm_cpu.h"

namespace convnet {

// fc_bwd_data's variant after the micro-kernels: no pack of w (fc.cpp).
constexpr int kFcDotVariant = kGemmVariants;

// Variant 0 takes it up to this many images on the process's SIMD path (cpu_isa()), where the pack
// of all of w that the SGEMM driver makes every call is shared by too few images to pay: a function
// of the path and the shape only, so its bits do not depend on timing. AMD Zen 5, one thread, CPU
// time, fc6-fc8 (9216 / 4096 x 4096, 4096 x 1000) against the SGEMM path (BENCHMARKS.md, "The FC
// data gradient's tile reduction"): AVX-512 1.05-1.19x at 64 images, 1.00-1.11x at 96, 0.93-0.99x
// at 128, so 64; AVX2 0.95-1.15x at 64, 1.01-1.07x at 128, 1.02-1.06x at 256; portable about 5x at
// 64-256 (against the SSE2 micro-kernel), so 256, the most measured.
int64_t fc_dot_max_images();

// dx (I, N) (+)= w (I, O) dy (O, N), on the process's SIMD path (cpu_isa()).
void fc_bwd_data_dot(const FcParams& p, const float* dy, const float* w, float* dx,
                     bool accumulate);

}  // namespace convnet
