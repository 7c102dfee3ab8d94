// The normalisation kernels of lrn_kernels.h compiled for AVX2+FMA (chosen by lrn.cpp).
#include "lrn_kernels.h"

namespace convnet {
namespace avx2 {

void lrn_fwd(const NormParams& p, const float* x, float* y, float* denoms) {
  lrn_fwd_impl(p, x, y, denoms);
}

void lrn_bwd(const NormParams& p, const float* dy, const float* x, const float* y,
             const float* denoms, float* dx, bool accumulate) {
  lrn_bwd_impl(p, dy, x, y, denoms, dx, accumulate);
}

void rnorm_fwd(const NormParams& p, const float* x, float* y, float* denoms) {
  rnorm_fwd_impl(p, x, y, denoms);
}

void rnorm_bwd(const NormParams& p, const float* dy, const float* x, const float* y,
               const float* denoms, float* dx, bool accumulate) {
  rnorm_bwd_impl(p, dy, x, y, denoms, dx, accumulate);
}

}  // namespace avx2
}  // namespace convnet
