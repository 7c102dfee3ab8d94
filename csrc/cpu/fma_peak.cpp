#include "fma_peak.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "check.h"
#include "isa.h"

namespace convnet {

double measure_fma_peak(const char* isa, int threads, int64_t iters, int repeats) {
  bool wide = !std::strcmp(isa, "avx512");
  CONVNET_CHECK(wide || !std::strcmp(isa, "avx2"),
                "measure_fma_peak: isa must be 'avx512' or 'avx2', got '" << isa << "'");
  Isa need = wide ? Isa::avx512 : Isa::avx2;
  CONVNET_CHECK(need <= cpu_isa_supported(), "measure_fma_peak: " << isa
                    << " is not supported by this CPU");
  CONVNET_CHECK(threads >= 1 && iters >= 1 && repeats >= 1,
                "measure_fma_peak: threads, iters and repeats must be >= 1");
  double best = 0;
  for (int rep = 0; rep < repeats; ++rep) {
    double flops = 0, t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += wide ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
    double t = omp_get_wtime() - t0;
    best = std::max(best, flops / t * 1e-9);
  }
  return best;
}

}  // namespace convnet
