// GPU-side measurement for the benchmarks (implemented in csrc/cuda/bench_support.cu; on the
// emulated backend the same code times the emulator, which says nothing about a GPU).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "conv.h"

namespace convnet {

// Runs issue() `repeats` times on device `dev`, each run between two CUDA events recorded on the
// device's stream; returns each run's milliseconds as the GPU measured them.
std::vector<float> time_with_events(int dev, int repeats, const std::function<void()>& issue);

// FP32 FMA throughput of device `dev` in GFLOP/s (independent fmaf chains in every thread of a
// grid large enough to fill any GPU), the best of `repeats` timed runs.
double measure_fma_peak_cuda(int dev, int repeats);

// What variant 0 launches on device `dev` (csrc/cuda/gemm.cu, conv.cu): the tile, blocks,
// reduction splits and waves of SMs, as the benchmarks print it.
std::string sgemm_plan_cuda(int64_t m, int64_t n, int64_t k, int dev);
std::string conv_plan_cuda(ConvOp op, const ConvParams& p, int dev);

}  // namespace convnet
