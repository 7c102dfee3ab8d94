// e^x for float, written so that `#pragma omp simd` loops vectorise it (libm's expf is a call the
// vectoriser cannot see into without -ffast-math). Cody-Waite range reduction x = n ln2 + r,
// a degree-6 polynomial for e^r (Cephes' coefficients), 2^n put into the exponent bits.
// Max relative error ~2 ulp. Inputs below -87 give exactly 0 (true value < 1.7e-38), inputs
// above 88 give +inf (true value > 1.6e38): the range keeps 2^n a normal float. NaN gives NaN.
#pragma once
#include <cstdint>
#include <cstring>

namespace convnet {

inline float fast_exp(float x) {
  const float lo = -87.f, hi = 88.f;
  float xc = x < lo ? lo : (x > hi ? hi : x);
  // Round x * log2(e) to the nearest integer with the 1.5 * 2^23 trick (no float->int call).
  const float magic = 12582912.f;
  float t = xc * 1.44269504088896341f + magic;
  float n = t - magic;
  float r = xc - n * 0.693359375f;  // ln2 split in two so n * ln2_hi is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  int32_t ti, pi;
  std::memcpy(&ti, &t, 4);
  std::memcpy(&pi, &p, 4);
  pi += (ti - 0x4B400000) << 23;  // add n to the exponent (t's mantissa holds n + 2^22)
  float e;
  std::memcpy(&e, &pi, 4);
  e = x < lo ? 0.f : e;
  e = x > hi ? __builtin_inff() : e;
  return x != x ? x : e;
}

}  // namespace convnet
