// The machine's FP32 FMA peak, measured (clock speeds under load are not what /proc/cpuinfo
// says): benchmarks report their GFLOP/s as a fraction of it.
#pragma once
#include <cstdint>

namespace convnet {

// GFLOP/s of a register-only FMA loop on `threads` threads with 512-bit (avx512) or 256-bit
// (avx2) vectors, best of `repeats` runs of `iters` iterations of 24 independent FMAs.
double measure_fma_peak(const char* isa, int threads, int64_t iters, int repeats);
double fma_loop_avx512(int64_t iters);  // FLOPs done; one thread
double fma_loop_avx2(int64_t iters);

}  // namespace convnet
