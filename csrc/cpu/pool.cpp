// CPU pooling (declared in csrc/common/pool.h; kernels in pool_kernels.h): the AVX-512 or AVX2
// build of the kernels on those CPU paths, the baseline build otherwise.
#include "pool.h"

#include "isa.h"
#include "pool_kernels.h"

namespace convnet {

void pool_fwd_cpu(const PoolParams& p, const float* x, float* y) {
  if (cpu_isa() == Isa::avx512) return avx512::pool_fwd(p, x, y);
  if (cpu_isa() == Isa::avx2) return avx2::pool_fwd(p, x, y);
  pool_fwd_impl(p, x, y);
}

void pool_bwd_cpu(const PoolParams& p, const float* dy, const float* x, const float* y,
                  float* dx, bool accumulate) {
  if (cpu_isa() == Isa::avx512) return avx512::pool_bwd(p, dy, x, y, dx, accumulate);
  if (cpu_isa() == Isa::avx2) return avx2::pool_bwd(p, dy, x, y, dx, accumulate);
  pool_bwd_impl(p, dy, x, y, dx, accumulate);
}

}  // namespace convnet
