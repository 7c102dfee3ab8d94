// GEMM operands as packers. The blocked GEMM (gemm_driver.h) never reads A or B directly: it asks
// an operand to copy a block into the micro-kernels' panel format. Plain matrices, implicit im2col
// views of images (convolution as an implicit GEMM, conv.cpp) and flipped filters all plug in the
// same way, so no im2col buffer is ever materialised.
//
// An operand is seen as a (rows, k) matrix: for A rows = m, for B rows = n (B is (k, n), so B's
// "rows" are its columns). pack() writes ceil(rows / width) panels of kc * width floats: panel q,
// step t holds elements (r0 + q*width + i, k0 + t) for i < width, zero past `rows`.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace convnet {

struct GemmOperand {
  virtual void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
                    float* dst) const = 0;
  virtual ~GemmOperand() = default;
};

// element(r, k) = data[r * row_stride + k * k_stride]; one of the strides is 1.
struct StridedOperand final : GemmOperand {
  const float* data;
  int64_t row_stride, k_stride;
  StridedOperand(const float* d, int64_t rs, int64_t ks) : data(d), row_stride(rs), k_stride(ks) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    for (int64_t q = 0; q * width < rows; ++q, dst += kc * width) {
      int64_t rq = r0 + q * width;
      int w = int(std::min<int64_t>(width, rows - q * width));
      if (row_stride == 1) {
        // Rows contiguous: each k step is a straight copy.
        for (int64_t t = 0; t < kc; ++t) {
          const float* s = data + rq + (k0 + t) * k_stride;
          float* d = dst + t * width;
          for (int i = 0; i < w; ++i) d[i] = s[i];
          for (int i = w; i < width; ++i) d[i] = 0.f;
        }
      } else {
        // k contiguous: a transpose, done in blocks of 8 k steps so reads stay sequential and
        // the writes of a block land in a few cache lines.
        for (int64_t tb = 0; tb < kc; tb += 8) {
          int tn = int(std::min<int64_t>(8, kc - tb));
          for (int i = 0; i < w; ++i) {
            const float* s = data + (rq + i) * row_stride + (k0 + tb) * k_stride;
            for (int t = 0; t < tn; ++t) dst[(tb + t) * width + i] = s[t * k_stride];
          }
          for (int i = w; i < width; ++i)
            for (int t = 0; t < tn; ++t) dst[(tb + t) * width + i] = 0.f;
        }
      }
    }
  }
};

}  // namespace convnet
