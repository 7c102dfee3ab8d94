#include "cnorm.h"

#include <cmath>

#include "parallel.h"

namespace convnet {

void scale_by_denoms_cpu(const float* x, const float* denoms, float* y, int64_t n, float pow) {
  parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = x[i] * std::pow(denoms[i], -pow);
  });
}

}  // namespace convnet
