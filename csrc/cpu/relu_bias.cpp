// The fused ReLU + bias backward on the CPU (csrc/common/relu_bias.h): one pass over each filter's
// row of dy, masking it in place and summing it. Threads split the filters (static shares), so
// each db[f] has one writer and one order of additions whatever the thread count: lane j of 16
// sums the elements i = j (mod 16) in increasing i, then the lanes are added as a tree (j + 8,
// j + 4, j + 2, j + 1). No -ffast-math here, so the compiler keeps that order, and the 16 lanes
// are one AVX-512 register or two AVX2 ones: the same bits on every SIMD path.
#include "relu_bias.h"

#include <omp.h>

#include <algorithm>

#include "isa_variants.h"
#include "parallel.h"
#include "relu_bias_row.h"
#include "relu_mask.h"

namespace convnet {
namespace {

constexpr int kLanes = 16;

CONVNET_BODY void relu_bias_row_body(float* dy, const float* y, int64_t per, float* sum) {
  const int64_t full = per / kLanes * kLanes;
  float* __restrict d = dy;
  const float* __restrict yr = y;
  float lane[kLanes] = {};
  for (int64_t i = 0; i < full; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const float g = relu_grad_times(d[i + j], yr[i + j]);
      d[i + j] = g;
      lane[j] += g;
    }
  }
  for (int64_t i = full; i < per; ++i) {
    const float g = relu_grad_times(d[i], yr[i]);
    d[i] = g;
    lane[i - full] += g;
  }
  for (int h = kLanes / 2; h > 0; h /= 2)
    for (int j = 0; j < h; ++j) lane[j] += lane[j + h];
  *sum = lane[0];
}

// relu_bias_row's sum alone, of a row already masked: the same lanes in the same order, so the
// same bits as relu_bias_row on the unmasked row.
CONVNET_BODY void bias_row_body(const float* dy, int64_t per, float* sum) {
  const int64_t full = per / kLanes * kLanes;
  const float* __restrict d = dy;
  float lane[kLanes] = {};
  for (int64_t i = 0; i < full; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) lane[j] += d[i + j];
  }
  for (int64_t i = full; i < per; ++i) lane[i - full] += d[i];
  for (int h = kLanes / 2; h > 0; h /= 2)
    for (int j = 0; j < h; ++j) lane[j] += lane[j + h];
  *sum = lane[0];
}

}  // namespace

CONVNET_ISA_VARIANTS(relu_bias_row, (float* dy, const float* y, int64_t per, float* sum),
                     (dy, y, per, sum))
CONVNET_ISA_VARIANTS(bias_row, (const float* dy, int64_t per, float* sum), (dy, per, sum))

void relu_bias_bwd_cpu(float* dy, const float* y, float* db, int64_t filters, int64_t per_filter,
                       bool accumulate) {
  auto rows = [&](int64_t f0, int64_t f1) {
    for (int64_t f = f0; f < f1; ++f) {
      float s;
      relu_bias_row(dy + f * per_filter, y + f * per_filter, per_filter, &s);
      db[f] = accumulate ? db[f] + s : s;
    }
  };
  const bool parallel = filters > 1 && filters * per_filter >= kMinParallelWork &&
                        omp_get_max_threads() > 1;
  if (!parallel) return rows(0, filters);
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t share = (filters + nt - 1) / nt;
    const int64_t f0 = std::min<int64_t>(filters, t * share);
    rows(f0, std::min<int64_t>(filters, f0 + share));
  }
}

}  // namespace convnet
