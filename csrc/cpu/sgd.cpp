// The paper's momentum + weight-decay update on the CPU: one pass, 5 floats of traffic per weight.
// Compiled for baseline x86-64 (no FMA instructions exist there, so the specified rounding of
// sgd.h holds; mul_rn guards builds that enable FMA).
#include "sgd.h"

#include "parallel.h"

namespace convnet {

void sgd_update_cpu(const SgdParams& p, float* w, float* v, const float* grad, int64_t n) {
  const float lr = p.lr, mom = p.momentum, lrwd = p.lr * p.weight_decay;
  parallel_range(n, [&](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
      float vi = sgd_velocity(v[i], w[i], grad[i], mom, lr, lrwd);
      v[i] = vi;
      w[i] = w[i] + vi;
    }
  });
}

}  // namespace convnet
