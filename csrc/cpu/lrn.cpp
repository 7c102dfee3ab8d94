// CPU response normalisation (declared in csrc/common/lrn.h; kernels in lrn_kernels.h): the
// AVX-512 or AVX2 build of the kernels on those CPU paths, the baseline build otherwise.
#include "lrn.h"

#include "isa.h"
#include "lrn_kernels.h"

namespace convnet {

void lrn_fwd_cpu(const NormParams& p, const float* x, float* y, float* denoms) {
  if (cpu_isa() == Isa::avx512) return avx512::lrn_fwd(p, x, y, denoms);
  if (cpu_isa() == Isa::avx2) return avx2::lrn_fwd(p, x, y, denoms);
  lrn_fwd_impl(p, x, y, denoms);
}

void lrn_bwd_cpu(const NormParams& p, const float* dy, const float* x, const float* y,
                 const float* denoms, float* dx, bool accumulate) {
  if (cpu_isa() == Isa::avx512) return avx512::lrn_bwd(p, dy, x, y, denoms, dx, accumulate);
  if (cpu_isa() == Isa::avx2) return avx2::lrn_bwd(p, dy, x, y, denoms, dx, accumulate);
  lrn_bwd_impl(p, dy, x, y, denoms, dx, accumulate);
}

void rnorm_fwd_cpu(const NormParams& p, const float* x, float* y, float* denoms) {
  if (cpu_isa() == Isa::avx512) return avx512::rnorm_fwd(p, x, y, denoms);
  if (cpu_isa() == Isa::avx2) return avx2::rnorm_fwd(p, x, y, denoms);
  rnorm_fwd_impl(p, x, y, denoms);
}

void rnorm_bwd_cpu(const NormParams& p, const float* dy, const float* x, const float* y,
                   const float* denoms, float* dx, bool accumulate) {
  if (cpu_isa() == Isa::avx512) return avx512::rnorm_bwd(p, dy, x, y, denoms, dx, accumulate);
  if (cpu_isa() == Isa::avx2) return avx2::rnorm_bwd(p, dy, x, y, denoms, dx, accumulate);
  rnorm_bwd_impl(p, dy, x, y, denoms, dx, accumulate);
}

}  // namespace convnet
