// CPU pooling (declared in csrc/common/pool.h; kernels in pool_kernels.h): the AVX-512 or AVX2
// build of the kernels on those CPU paths, the baseline build otherwise.
#include "pool.h"
#include "relu_bias.h"

#include "isa.h"
#include "pool_kernels.h"

namespace convnet {

void pool_fwd_cpu(const PoolParams& p, const float* x, float* y, uint8_t* winners) {
  if (cpu_isa() == Isa::avx512) return avx512::pool_fwd(p, x, y, winners);
  if (cpu_isa() == Isa::avx2) return avx2::pool_fwd(p, x, y, winners);
  pool_fwd_impl(p, x, y, winners);
}

static void pool_bwd_any(const PoolParams& p, const float* dy, const float* x, const float* y,
                         const uint8_t* winners, float* dx, bool accumulate, float* db) {
  if (cpu_isa() == Isa::avx512) return avx512::pool_bwd(p, dy, x, y, winners, dx, accumulate, db);
  if (cpu_isa() == Isa::avx2) return avx2::pool_bwd(p, dy, x, y, winners, dx, accumulate, db);
  pool_bwd_impl(p, dy, x, y, winners, dx, accumulate, db);
}

void pool_bwd_cpu(const PoolParams& p, const float* dy, const float* x, const float* y,
                  float* dx, bool accumulate) {
  pool_bwd_any(p, dy, x, y, nullptr, dx, accumulate, nullptr);
}

void pool_bwd_relu_bias_cpu(const PoolParams& p, const float* dy, const float* x, const float* y,
                            float* dx, float* db) {
  pool_bwd_any(p, dy, x, y, nullptr, dx, false, db);
}

void pool_bwd_winners_cpu(const PoolParams& p, const float* dy, const uint8_t* winners,
                          float* dx, bool accumulate) {
  pool_bwd_any(p, dy, nullptr, nullptr, winners, dx, accumulate, nullptr);
}

void pool_bwd_winners_relu_bias_cpu(const PoolParams& p, const float* dy, const uint8_t* winners,
                                    float* dx, float* db) {
  pool_bwd_any(p, dy, nullptr, nullptr, winners, dx, false, db);
}

}  // namespace convnet
