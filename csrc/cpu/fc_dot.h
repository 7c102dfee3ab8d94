// The FC data gradient as inner products (fc_dot_kernels.h): fc_bwd_data variant kFcDotVariant.
#pragma once
#include "fc.h"
#include "gemm_cpu.h"

namespace convnet {

// fc_bwd_data's variant after the micro-kernels: no pack of w (fc.cpp).
constexpr int kFcDotVariant = kGemmVariants;

// Variant 0 takes it up to this many images on the process's SIMD path (cpu_isa()): a function of
// the path and the shape only, so its bits do not depend on timing. At AVX-512 the SGEMM reads w
// in place (6x64, gemm_driver.h's run_rows_a). Its tile computed a whole 32- or 64-column panel
// however few images there were, and this path ran fc6-fc8 (9216 / 4096 x 4096, 4096 x 1000)
// 1.24-3.1x as fast at 1 to 16 images, 0.92-1.06x at 24 (AMD Zen 5, one thread), so 24 until the
// tile computed only the 16-float vectors that hold the images (gemm_avx512.cpp, run_narrow).
// Since then (Zen 5, AVX-512, 11 rounds alternating in one process, two threads, ms, SGEMM /
// this path): fc6 4.19 / 4.42 at 8 images, 4.33 / 5.12 at 10, 4.20 / 4.80 at 12, 4.24 / 5.63 at
// 16, 5.62 / 7.54 at 24; fc7 2.15 / 1.96 at 8, 1.86 / 2.29 at 12, 1.79 / 2.36 at 16; fc8 (its 16
// MB of w in L3) 0.40 / 0.22 at 8, 0.43 / 0.29 at 12, 0.40 / 0.41 at 16, 0.57 / 0.49 at 20. The
// three layers' sum is least with this path up to 8 images (6.60 against 6.74 ms; one thread,
// thread CPU time, 12.02 against 12.73) and the SGEMM from 10 (7.09 against 7.91), so 8. AVX2
// (the SGEMM packs w by a transposing copy): 0.95-1.15x at 64 images, 1.01-1.07x at 128,
// 1.02-1.06x at 256; portable about 5x at 64-256 (against the SSE2 micro-kernel), so 256, the
// most measured.
int64_t fc_dot_max_images();

// dx (I, N) (+)= w (I, O) dy (O, N), on the process's SIMD path (cpu_isa()).
void fc_bwd_data_dot(const FcParams& p, const float* dy, const float* w, float* dx,
                     bool accumulate);

}  // namespace convnet
