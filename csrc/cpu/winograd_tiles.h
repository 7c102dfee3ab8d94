// The two Winograd algorithms of the CPU's convolutions (winograd.h), F(2x2, 3x3) and
// F(2x2, 5x5), as their one-dimensional transforms: the two-dimensional ones of
// winograd_kernels.h, winograd.cpp and winograd_wgrad.cpp apply them to the columns of a tile,
// then to its rows. With d an a x a input tile (a = r + 1), g an r x r filter, Y the 2x2 output:
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
// and the weight gradient's adjoints A (on a 2x2 of dy) and G^T (back to r x r).
#pragma once
#include "isa_variants.h"

namespace convnet {

// F(2, 3) at the points 0, 1, -1, infinity (Lavin & Gray, 2016):
//   B^T = | 1  0 -1  0 |   G = | 1    0    0   |   A^T = | 1  1  1  0 |
//         | 0  1  1  0 |       | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
//         | 0 -1  1  0 |       | 1/2 -1/2  1/2 |
//         | 0  1  0 -1 |       | 0    0    1   |
struct WinogradF2x3 {
  static constexpr int kR = 3, kAlpha = 4;
  using FilterMath = float;  // the type filter() computes in

  // r = B^T d
  static CONVNET_BODY void input(const float* d, float* r) {
    r[0] = d[0] - d[2], r[1] = d[1] + d[2], r[2] = d[2] - d[1], r[3] = d[1] - d[3];
  }
  // o = A^T m
  static CONVNET_BODY void output(const float* m, float* o) {
    o[0] = m[0] + m[1] + m[2], o[1] = m[1] - m[2] - m[3];
  }
  // q = A y
  static CONVNET_BODY void grad(const float* y, float* q) {
    q[0] = y[0], q[1] = y[0] + y[1], q[2] = y[0] - y[1], q[3] = -y[1];
  }
  // u = G k
  static CONVNET_BODY void filter(const float* k, float* u) {
    u[0] = k[0];
    u[1] = (k[0] + k[1] + k[2]) * 0.5f;
    u[2] = (k[0] - k[1] + k[2]) * 0.5f;
    u[3] = k[2];
  }
  // g = G^T u
  static CONVNET_BODY void filter_grad(const float* u, float* g) {
    g[0] = u[0] + (u[1] + u[2]) * 0.5f;
    g[1] = (u[1] - u[2]) * 0.5f;
    g[2] = (u[1] + u[2]) * 0.5f + u[3];
  }
};

// F(2, 5) at the points 0, 1, -1, 2, -1/2, infinity. Against float64 the 2D algorithm's float32
// error (48 channels, random normal data) measured 1.4e-6 of the largest output at these points,
// 2.3e-6 at 0, +-1, +-2 and 3.8e-6 at 0, +-1, +-1/2 (the direct sum: 0.4e-6). B^T's row 3 is
// the Lagrange form's times 2 and G's row 3 the Lagrange form's over 2: a power of two, so
// neither rounds differently, and B^T stays free of quarters.
//   B^T = | 1  3/2  -2   -3/2  1    0 |   G = |  1      0     0     0     0    |
//         | 0  -1   -5/2 -1/2  1    0 |       | -1/3   -1/3  -1/3  -1/3  -1/3  |
//         | 0   1   1/2  -5/2  1    0 |       |  1/3   -1/3   1/3  -1/3   1/3  |
//         | 0  -1   -2    1    2    0 |       |  1/30   1/15  2/15  4/15  8/15 |
//         | 0   2   -1   -2    1    0 |       | -16/15  8/15 -4/15  2/15 -1/15 |
//         | 0   1   3/2  -2   -3/2  1 |       |  0      0     0     0     1    |
//   A^T = | 1  1  1  1  1     0 |
//         | 0  1 -1  2  -1/2  1 |
struct WinogradF2x5 {
  static constexpr int kR = 5, kAlpha = 6;
  using FilterMath = double;

  static CONVNET_BODY void input(const float* d, float* r) {
    r[0] = d[0] + 1.5f * d[1] - 2.f * d[2] - 1.5f * d[3] + d[4];
    r[1] = d[4] - d[1] - 2.5f * d[2] - 0.5f * d[3];
    r[2] = d[4] + d[1] + 0.5f * d[2] - 2.5f * d[3];
    r[3] = d[3] - d[1] + 2.f * (d[4] - d[2]);
    r[4] = d[4] - d[2] + 2.f * (d[1] - d[3]);
    r[5] = d[5] + d[1] + 1.5f * d[2] - 2.f * d[3] - 1.5f * d[4];
  }
  static CONVNET_BODY void output(const float* m, float* o) {
    o[0] = m[0] + m[1] + m[2] + m[3] + m[4];
    o[1] = m[1] - m[2] + 2.f * m[3] - 0.5f * m[4] + m[5];
  }
  static CONVNET_BODY void grad(const float* y, float* q) {
    q[0] = y[0], q[1] = y[0] + y[1], q[2] = y[0] - y[1];
    q[3] = y[0] + 2.f * y[1], q[4] = y[0] - 0.5f * y[1], q[5] = y[1];
  }
  // In double: a pass over the filters once per call, and thirds and fifteenths round once.
  static CONVNET_BODY void filter(const double* k, double* u) {
    u[0] = k[0];
    u[1] = -(k[0] + k[1] + k[2] + k[3] + k[4]) / 3;
    u[2] = (k[0] - k[1] + k[2] - k[3] + k[4]) / 3;
    u[3] = (k[0] + 2 * k[1] + 4 * k[2] + 8 * k[3] + 16 * k[4]) / 30;
    u[4] = -(16 * k[0] - 8 * k[1] + 4 * k[2] - 2 * k[3] + k[4]) / 15;
    u[5] = k[4];
  }
  static CONVNET_BODY void filter_grad(const float* u, float* g) {
    const float a = (u[2] - u[1]) / 3.f, b = -(u[1] + u[2]) / 3.f;
    const float c = u[3] / 30.f, e = u[4] / 15.f;
    g[0] = u[0] + a + c - 16.f * e;
    g[1] = b + 2.f * c + 8.f * e;
    g[2] = a + 4.f * c - 4.f * e;
    g[3] = b + 8.f * c + 2.f * e;
    g[4] = a + 16.f * c - e + u[5];
  }
};

}  // namespace convnet
