// Event timing and the measured FMA peak for the benchmarks (declared in csrc/common/bench_support.h).
#include <algorithm>

#include "bench_support.h"
#include "cuda_check.h"

namespace convnet {
namespace {

// Owns a pair of events (destroyed even when the timed code throws).
struct EventPair {
  cudaEvent_t start = nullptr, stop = nullptr;
  EventPair() {
    CONVNET_CUDA_CHECK(cudaEventCreate(&start));
    CONVNET_CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~EventPair() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
};

constexpr int kChains = 8;  // independent FMA chains per thread: hide the FMA latency
constexpr int kPeakThreads = 256, kPeakBlocks = 4096, kPeakIters = 2048;

// Thread mapping: one thread per (block, thread); each runs kChains chains of kPeakIters FMAs.
__global__ void __launch_bounds__(kPeakThreads) fma_peak_kernel(float* out, int iters) {
  float a[kChains];
#pragma unroll
  for (int j = 0; j < kChains; ++j) a[j] = float(threadIdx.x + j);
  const float m = 0.9999f, c = 0.0001f;
  for (int i = 0; i < iters; ++i)
#pragma unroll
    for (int j = 0; j < kChains; ++j) a[j] = fmaf(a[j], m, c);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kChains; ++j) sum += a[j];
  if (sum == -1.f) out[0] = sum;  // never true; keeps the chains from being optimised away
}

}  // namespace

std::vector<float> time_with_events(int dev, int repeats, const std::function<void()>& issue) {
  set_device(dev);
  cudaStream_t s = current_stream();
  EventPair ev;
  std::vector<float> ms;
  for (int r = 0; r < repeats; ++r) {
    CONVNET_CUDA_CHECK(cudaEventRecord(ev.start, s));
    issue();
    CONVNET_CUDA_CHECK(cudaEventRecord(ev.stop, s));
    CONVNET_CUDA_CHECK(cudaEventSynchronize(ev.stop));
    float t = 0.f;
    CONVNET_CUDA_CHECK(cudaEventElapsedTime(&t, ev.start, ev.stop));
    ms.push_back(t);
  }
  return ms;
}

double measure_fma_peak_cuda(int dev, int repeats) {
  set_device(dev);
  DeviceBuffer out(sizeof(float), dev);
  std::vector<float> ms = time_with_events(dev, std::max(1, repeats) + 1, [&] {
    CONVNET_LAUNCH(fma_peak_kernel, kPeakBlocks, kPeakThreads, 0, current_stream(),
                   out.as<float>(), kPeakIters);
  });
  const float best = *std::min_element(ms.begin() + 1, ms.end());  // the first run warms up
  const double flops = 2.0 * kChains * kPeakIters * double(kPeakThreads) * kPeakBlocks;
  return flops / (best * 1e-3) * 1e-9;
}

}  // namespace convnet
