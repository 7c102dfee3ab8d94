// The FC data gradient as inner products (fc_dot_kernels.h): fc_bwd_data variant kFcDotVariant.
#pragma once
#include "fc.h"
#include "gemm_cpu.h"

namespace convnet {

// fc_bwd_data's variant after the micro-kernels: no pack of w (fc.cpp).
constexpr int kFcDotVariant = kGemmVariants;

// Variant 0 takes it up to this many images on the process's SIMD path (cpu_isa()): a function of
// the path and the shape only, so its bits do not depend on timing. At AVX-512 the SGEMM reads w
// in place (6x64 or 14x32, gemm_driver.h's run_rows_a), whose tile computes a whole 32-column
// panel however few images there are: AMD Zen 5, one thread, thread CPU time, fc6-fc8 (9216 /
// 4096 x 4096, 4096 x 1000), this path against the SGEMM's: 1.24-3.1x at 1 to 16 images,
// 1.06-1.16x at 20, 0.92-1.06x at 24, 0.79-0.94x at 28, 0.75-0.88x at 32, so 24. AVX2 (the
// SGEMM packs w by a transposing copy): 0.95-1.15x at 64 images, 1.01-1.07x at 128, 1.02-1.06x
// at 256; portable about 5x at 64-256 (against the SSE2 micro-kernel), so 256, the most measured.
int64_t fc_dot_max_images();

// dx (I, N) (+)= w (I, O) dy (O, N), on the process's SIMD path (cpu_isa()).
void fc_bwd_data_dot(const FcParams& p, const float* dy, const float* w, float* dx,
                     bool accumulate);

}  // namespace convnet
