// SGEMM variant 1: portable micro-kernel, a 4x16 tile of C accumulated in plain C++ (the
// compiler vectorises the 16-wide rows with whatever baseline SIMD it may assume). Runs on any
// x86-64 (and any other CPU); also the reference the faster variants are tested against.
#include "gemm_driver.h"

namespace convnet {
namespace {

struct Kernel4x16 {
  static constexpr int MR = 4, NR = 16, KC = 256, MC = 4 * 64, NC = 2048;

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                  float beta, int rows, int cols) {
    float acc[MR][NR] = {};
    for (int64_t k = 0; k < kc; ++k, a += MR, b += NR)
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NR; ++j) acc[r][j] += a[r] * b[j];
    for (int r = 0; r < rows; ++r) {
      float* cr = c + r * ldc;
      for (int j = 0; j < cols; ++j)
        cr[j] = beta == 0.f ? alpha * acc[r][j] : alpha * acc[r][j] + beta * cr[j];
    }
  }
};

}  // namespace

void gemm_portable(const GemmProblem& p) { gemm_detail::gemm_blocked<Kernel4x16>(p); }

}  // namespace convnet
