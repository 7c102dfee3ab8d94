#include "gemm_pack.h"

#include "isa.h"

namespace convnet {

alignas(64) const float kZeroRow[64] = {};

CONVNET_PACK_CLONES
void pack_strided(const float* data, int64_t row_stride, int64_t k_stride, int64_t r0,
                  int64_t rows, int64_t k0, int64_t kc, int width, float* dst) {
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
      // k contiguous: a transpose.
      const float* src[64];
      for (int i = 0; i < width; ++i) src[i] = i < w ? data + (rq + i) * row_stride + k0 : nullptr;
      pack_transpose(src, width, kc, dst);
    }
  }
}

CONVNET_PACK_CLONES
static void pack_transpose_generic(const float* const* rows, int width, int64_t len, float* dst) {
  // Blocks of 16 k steps: each row's 16 values are one cache line read, and the block's writes
  // stay within 16 * width floats.
  for (int64_t t0 = 0; t0 < len; t0 += 16) {
    int tn = int(std::min<int64_t>(16, len - t0));
    float* d = dst + t0 * width;
    for (int i = 0; i < width; ++i) {
      const float* s = rows[i];
      if (s)
        for (int t = 0; t < tn; ++t) d[t * width + i] = s[t0 + t];
      else
        for (int t = 0; t < tn; ++t) d[t * width + i] = 0.f;
    }
  }
}

void pack_transpose(const float* const* rows, int width, int64_t len, float* dst) {
  if (cpu_isa() == Isa::avx512)
    pack_transpose_avx512(rows, width, len, dst);
  else
    pack_transpose_generic(rows, width, len, dst);
}

}  // namespace convnet
