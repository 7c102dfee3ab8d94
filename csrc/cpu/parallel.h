// Threading for the CPU backend (OpenMP underneath). Memory-bound loops split a flat range into
// one contiguous chunk per thread, and stay single-threaded when the range is too small to pay
// for waking the other threads.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace convnet {

constexpr int64_t kMinParallelWork = 1 << 15;

template <class F>
void parallel_range(int64_t n, F&& f, int64_t min_work = kMinParallelWork) {
  int threads = omp_get_max_threads();
  if (n < min_work || threads == 1) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    // Chunks aligned to 16 floats (a cache line) so threads never share a line they write.
    int64_t chunk = ((n + nt - 1) / nt + 15) / 16 * 16;
    int64_t b = std::min(n, t * chunk), e = std::min(n, b + chunk);
    if (b < e) f(b, e);
  }
}

}  // namespace convnet
