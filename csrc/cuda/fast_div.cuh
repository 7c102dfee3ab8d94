// Division by a divisor fixed for a launch (a filter size, a batch size, an image width), done in
// kernels as a multiply-high, an add and a shift: a 32-bit `/` by a run-time value is a dozen-odd
// instructions on a GPU (no divide unit), a 64-bit one a call. Set up on the host once per launch
// (Granlund & Montgomery's round-up method): with s = ceil(log2 d) and
// mul = floor(2^32 (2^s - d) / d) + 1, n / d = (umulhi(n, mul) + n) >> s, exact for every
// 0 <= n < 2^31 and 1 <= d < 2^31 (the formula: tests/test_conv_cuda_variants.py against exact
// division over divisors 1..3000 and edge dividends; the kernels using it: every conv test).
#pragma once
#include <cstdint>

#include "cuda_check.h"

namespace convnet {

struct FastDiv {
  int d = 1;
  unsigned mul = 1, shift = 0;

  FastDiv() = default;
  explicit FastDiv(int divisor) : d(divisor) {
    CONVNET_CHECK(divisor >= 1, "FastDiv: divisor " << divisor << " < 1");
    while ((uint64_t(1) << shift) < uint64_t(divisor)) ++shift;
    mul = unsigned(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - uint64_t(divisor))) /
                       uint64_t(divisor) + 1);
  }
  // n / d for 0 <= n < 2^31.
  __device__ __forceinline__ int div(int n) const {
    return int((__umulhi(unsigned(n), mul) + unsigned(n)) >> shift);
  }
};

}  // namespace convnet
