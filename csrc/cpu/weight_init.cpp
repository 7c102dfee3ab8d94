// Gaussian initial weights from Philox + Box-Muller (formula in weight_init.h), on the host.
// Double-precision maths rounded once to float: the same bits wherever the library runs.
#include "weight_init.h"

#include <cmath>

#include "parallel.h"
#include "rng.h"

namespace convnet {

void gaussian_fill_host(float* w, int64_t n, double std, uint64_t seed, uint32_t stream) {
  const double two_pi = 2.0 * 3.141592653589793;  // 2.0 * np.pi, as convnet/rng.py computes it
  // Two elements per Philox block: words (4b, 4b+1) -> element 2b, (4b+2, 4b+3) -> element 2b+1.
  const int64_t blocks = (n + 1) / 2;
  parallel_range(blocks, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const Philox4 r = philox_block(seed, stream, 0, uint64_t(b));
      for (int j = 0; j < 2 && 2 * b + j < n; ++j) {
        const double u1 = (double(r.v[2 * j]) + 1.0) * (1.0 / 4294967296.0);
        const double u2 = double(r.v[2 * j + 1]) * (1.0 / 4294967296.0);
        const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);
        w[2 * b + j] = float(std * z);
      }
    }
  }, 1 << 12);
}

}  // namespace convnet
