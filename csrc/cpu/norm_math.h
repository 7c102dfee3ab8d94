// d^(-beta) for the normalisation layers, written so that `#pragma omp simd` loops vectorise it
// (no libm calls): reciprocal square roots for the common exponents (0.75 is AlexNet's:
// r = 1/sqrt(d), d^-0.75 = r * r / sqrt(r)), and exp2(-beta * log2(d)) with polynomial
// log2/exp2 otherwise: relative error below 3e-7 + 0.7 * 2^-23 * |beta * log2(d)| (the float
// rounding of the exponent dominates; < 1e-6 while beta * log2(d) < 10), for d >= min_div > 0.
// Selects are done on integer bits: GCC will not if-convert (so not vectorise) a float select
// whose constant arm lets it move a possibly-trapping float operation into a branch.
// Included by each ISA's translation unit, so everything here is static (no ODR sharing between
// differently compiled copies).
#pragma once
#include <cstdint>
#include <type_traits>

namespace convnet {
namespace {

enum class PowKind { three_quarters, half, one, general };

inline PowKind pow_kind(float beta) {
  if (beta == 0.75f) return PowKind::three_quarters;
  if (beta == 0.5f) return PowKind::half;
  if (beta == 1.f) return PowKind::one;
  return PowKind::general;
}

// The element loops that call pow_neg are compiled with fast-math (NORM_FAST_MATH_BEGIN/END):
// GCC then computes 1/sqrt(x) and 1/x with the approximate reciprocal instructions plus a
// Newton step (~1 ulp) instead of the divider, which otherwise bounds these loops (two square
// roots and a division per element ran at ~10 cycles per element, far below memory speed).
// Inputs are finite here (min_div > 0, alpha >= 0 checked by the bindings). Without associative
// math: each inlined copy of a loop then rounds its sums as written, so a loop's tail, run by a
// second copy (lrn_kernels.h), gives the bits of its whole blocks.
#define NORM_FAST_MATH_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC optimize(\"fast-math\", \"no-associative-math\")")
#define NORM_FAST_MATH_END _Pragma("GCC pop_options")

NORM_FAST_MATH_BEGIN
// log2(d) for normal d > 0: exponent + ln(m)/ln(2) with m in [sqrt(1/2), sqrt(2)), ln(m) by the
// atanh series in t = (m-1)/(m+1), |t| < 0.172, truncated after t^9 (error < 1e-9).
inline float log2_positive(float d) {
  int32_t bits = __builtin_bit_cast(int32_t, d);
  int32_t mbits = (bits & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  int32_t big = mbits > 0x3fb504f3;                  // m > sqrt(2): halve m, bump the exponent
  int32_t e = (bits >> 23) - 127 + big;
  float m = __builtin_bit_cast(float, mbits - (big << 23));
  float t = (m - 1.f) / (m + 1.f), t2 = t * t;
  float ln_m = t * (2.f + t2 * (0.666666667f + t2 * (0.4f + t2 * (0.285714286f +
                                                                  t2 * 0.222222222f))));
  return float(e) + ln_m * 1.44269504f;
}

// 2^z, z clamped to [-125, 125]: 2^k * 2^f with k = trunc(z), f in (-1, 1), 2^f by its Taylor
// series in f*ln2 to the 10th term (error < 1e-8).
inline float exp2_clamped(float z) {
  int32_t zbits = __builtin_bit_cast(int32_t, z);
  int32_t mag = zbits & 0x7fffffff;
  mag = mag < 0x42fa0000 ? mag : 0x42fa0000;  // |z| <= 125
  z = __builtin_bit_cast(float, (zbits & int32_t(0x80000000)) | mag);
  int32_t k = int32_t(z);
  float u = (z - float(k)) * 0.693147181f;
  float p = 1.f + u * (1.f + u * (0.5f + u * (1.66666667e-1f + u * (4.16666667e-2f +
            u * (8.33333333e-3f + u * (1.38888889e-3f + u * (1.98412698e-4f +
            u * (2.48015873e-5f + u * 2.75573192e-6f))))))));
  uint32_t scaled = __builtin_bit_cast(uint32_t, p) + (uint32_t(k) << 23);
  return __builtin_bit_cast(float, scaled);
}

template <PowKind K>
inline float pow_neg(float d, float beta) {
  if constexpr (K == PowKind::three_quarters) {
    float r = 1.f / __builtin_sqrtf(d);
    return r * r * (1.f / __builtin_sqrtf(r));
  } else if constexpr (K == PowKind::half) {
    return 1.f / __builtin_sqrtf(d);
  } else if constexpr (K == PowKind::one) {
    return 1.f / d;
  } else {
    return exp2_clamped(-beta * log2_positive(d));
  }
}
NORM_FAST_MATH_END

template <PowKind K>
using PowConst = std::integral_constant<PowKind, K>;

// Calls f(PowConst<K>{}) with the PowKind of beta, so the loops inside are compiled per kind.
template <class F>
void with_pow_kind(float beta, F&& f) {
  switch (pow_kind(beta)) {
    case PowKind::three_quarters: f(PowConst<PowKind::three_quarters>{}); break;
    case PowKind::half: f(PowConst<PowKind::half>{}); break;
    case PowKind::one: f(PowConst<PowKind::one>{}); break;
    case PowKind::general: f(PowConst<PowKind::general>{}); break;
  }
}

}  // namespace
}  // namespace convnet
