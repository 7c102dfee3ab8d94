// e^x, e^x - 1, log(1 + t), logistic, tanh and softrelu for float, written so that `#pragma omp
// simd` loops vectorise them (libm's are calls the vectoriser cannot see into): no branches (both
// sides of a range split are computed and one is selected), no tables, integer tricks through
// memcpy. Accuracy (max error in float32 ulps of the true value, measured by tests/test_neuron.py
// over a dense sweep of float32 inputs on every SIMD path): see each function. They keep gradual
// underflow: results that are subnormal floats are rounded once, correctly scaled. Used by the
// neurons and by softmax's portable and AVX2 loops.
#pragma once
#include <cstdint>
#include <cstring>

#define CONVNET_VM inline __attribute__((always_inline))

namespace convnet {
namespace vm {

CONVNET_VM float from_bits(int32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
CONVNET_VM int32_t to_bits(float f) {
  int32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
CONVNET_VM float copy_sign(float mag, float sgn) {  // mag must be >= 0 (or NaN)
  return from_bits(to_bits(mag) | (to_bits(sgn) & int32_t(0x80000000u)));
}

// q * 2^n for n in [-150, 145], rounded once: two power-of-two factors 2^(n/2) each a normal
// float, and q * 2^(n/2) stays normal for q in [0.25, 2], so only the second product rounds
// (to a subnormal, 0 or inf when the result is out of the normal range).
CONVNET_VM float scale_pow2(float q, int32_t n) {
  int32_t n1 = n >> 1, n2 = n - n1;
  return q * from_bits((n1 + 127) << 23) * from_bits((n2 + 127) << 23);
}

// e^x: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 split so n * ln2_hi is exact), Cephes'
// degree-6 polynomial for e^r, then scale_pow2. Clamping x to [-104, 100] keeps n in
// scale_pow2's range; e^-104 and e^100 are already 0 and inf in float. NaN gives NaN.
// Max error 1.5 ulp (normal results).
CONVNET_VM float vexp(float x) {
  float xc = x < -104.f ? -104.f : (x > 100.f ? 100.f : x);
  // Round x log2(e) to an integer with the 1.5 * 2^23 trick: t's low mantissa bits hold n.
  const float magic = 12582912.f;
  float t = xc * 1.44269504088896341f + magic;
  float n = t - magic;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  float e = scale_pow2(p, to_bits(t) - 0x4B400000);
  return x != x ? x : e;
}

// e^z - 1. For |z| < ln2 the Taylor series to z^9/9! (truncation < 0.15 ulp there; no
// cancellation: the leading term is z itself); beyond, e^z - 1 loses at most one bit
// (e^z <= 1/2 or >= 2). -inf gives -1, inf gives inf. Max error 1.5 ulp.
CONVNET_VM float vexpm1(float z) {
  float s = 2.7557319224e-6f;  // 1/9!
  s = s * z + 2.4801587302e-5f;
  s = s * z + 1.9841269841e-4f;
  s = s * z + 1.3888888889e-3f;
  s = s * z + 8.3333333333e-3f;
  s = s * z + 4.1666666667e-2f;
  s = s * z + 1.6666666667e-1f;
  s = s * z + 0.5f;
  float small = s * (z * z) + z;
  float large = vexp(z) - 1.f;
  float az = z < 0.f ? -z : z;
  return az < 0.693147181f ? small : large;
}

// log(1 + t) for t in [0, 1] (what softrelu needs): u = 1 + t rounded; log(u) = k ln2 + log(1 + f)
// with f = u / 2^k - 1 in [-0.29, 0.42] (exact) and Cephes' logf polynomial; plus (t - (u - 1)) / u,
// the rounding error of u (exact by Fast2Sum), so tiny t give t. Max error 1 ulp. NaN gives NaN.
CONVNET_VM float vlog1p_unit(float t) {
  float u = 1.f + t;
  float c = (t - (u - 1.f)) / u;
  bool big = u > 1.41421356f;
  float k = big ? 1.f : 0.f;
  float f = (big ? 0.5f * u : u) - 1.f;
  float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y = y + k * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = f + (y + c);
  return r + k * 0.693359375f;
}

// 1 / (1 + e^-x), through e = e^-|x| <= 1: 1 / (1 + e) for x >= 0, e / (1 + e) below, so neither
// side overflows and very negative x give e^x down to the subnormals. Max error 2 ulp.
CONVNET_VM float vlogistic(float x) {
  float ax = x < 0.f ? -x : x;
  float e = vexp(-ax);
  float num = x < 0.f ? e : 1.f;
  return num / (1.f + e);
}

// tanh(x) = sign(x) (1 - 2 / (e^2|x| + 1)) for |x| >= 0.625; below, where that form cancels,
// Cephes' odd polynomial x + x^3 P(x^2). Saturates to +-1 (e^2|x| = inf gives exactly 1), keeps
// the sign of +-0, NaN gives NaN. Max error 2 ulp.
CONVNET_VM float vtanh(float x) {
  float ax = x < 0.f ? -x : x;
  float z = ax * ax;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * ax + ax;
  float large = 1.f - 2.f / (vexp(2.f * ax) + 1.f);
  float t = ax < 0.625f ? small : large;
  return copy_sign(t, x);
}

// log(1 + e^x) = max(x, 0) + log1p(e^-|x|). inf gives inf, -inf gives 0, NaN gives NaN.
// Max error 2 ulp.
CONVNET_VM float vsoftrelu(float x) {
  float ax = x < 0.f ? -x : x;
  float s = (x > 0.f ? x : 0.f) + vlog1p_unit(vexp(-ax));
  return x != x ? x : s;
}

}  // namespace vm
}  // namespace convnet
