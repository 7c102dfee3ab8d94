// The FC data gradient as inner products (fc_dot_kernels.h): the AVX-512 or AVX2 build on those
// CPU paths, the baseline build otherwise.
#include "fc_dot.h"

#include "fc_dot_kernels.h"
#include "isa.h"

namespace convnet {

int64_t fc_dot_max_images() { return cpu_isa() == Isa::avx512 ? 8 : 256; }

void fc_bwd_data_dot(const FcParams& p, const float* dy, const float* w, float* dx,
                     bool accumulate) {
  if (cpu_isa() == Isa::avx512) return avx512::fc_bwd_data_dot(p, dy, w, dx, accumulate);
  if (cpu_isa() == Isa::avx2) return avx2::fc_bwd_data_dot(p, dy, w, dx, accumulate);
  fc_bwd_data_dot_impl(p, dy, w, dx, accumulate);
}

}  // namespace convnet
