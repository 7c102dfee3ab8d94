// Gaussian initial weights from Philox + Box-Muller (formula in weight_init.h), on the host.
// Double-precision maths rounded once to float: the same bits wherever the library runs.
#include "weight_init.h"

#include <cmath>

#include "parallel.h"
#include "rng.h"

namespace convnet {

void gaussian_fill_host(float* w, int64_t n, float std, uint64_t seed, uint32_t stream) {
  const double two_pi = 6.283185307179586476925286766559;
  const int64_t blocks = (n + 3) / 4;
  parallel_range(blocks, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      Philox4 r = philox_block(seed, stream, 0, uint64_t(b));
      for (int j = 0; j < 2; ++j) {
        double u1 = (double(r.v[2 * j] >> 8) + 1.0) * (1.0 / 16777216.0);
        double u2 = double(r.v[2 * j + 1] >> 8) * (1.0 / 16777216.0);
        double rad = std::sqrt(-2.0 * std::log(u1)), t = two_pi * u2;
        int64_t i = 4 * b + 2 * j;
        if (i < n) w[i] = float(double(std) * rad * std::cos(t));
        if (i + 1 < n) w[i + 1] = float(double(std) * rad * std::sin(t));
      }
    }
  }, 1 << 12);
}

}  // namespace convnet
