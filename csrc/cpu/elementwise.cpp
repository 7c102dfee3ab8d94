#include "elementwise.h"

#include "parallel.h"

namespace convnet {

void fill_cpu(float* y, int64_t n, float value) {
  parallel_range(n, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) y[i] = value;
  });
}

void axpby_cpu(float* y, const float* x, int64_t n, float alpha, float beta) {
  parallel_range(n, [&](int64_t b, int64_t e) {
    if (beta == 0.f) {
#pragma omp simd
      for (int64_t i = b; i < e; ++i) y[i] = alpha * x[i];
    } else {
#pragma omp simd
      for (int64_t i = b; i < e; ++i) y[i] = alpha * x[i] + beta * y[i];
    }
  });
}

}  // namespace convnet
