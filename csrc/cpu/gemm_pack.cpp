#include "gemm_pack.h"

#include "cache_info.h"
#include "isa.h"

namespace convnet {

alignas(64) const float kZeroRow[64] = {};

int64_t pack_rows_prefetch_steps(int64_t segment_bytes) {
  return std::clamp<int64_t>(cache_sizes().l2 / 8 / std::max<int64_t>(segment_bytes, 1), 1, 64);
}

CONVNET_PACK_CLONES
void pack_strided(const float* data, int64_t row_stride, int64_t k_stride, int64_t r0,
                  int64_t rows, int64_t k0, int64_t kc, int width, float* dst) {
  int64_t panels = (rows + width - 1) / width;
  if (row_stride == 1) {
    const float* src = data + r0 + k0 * k_stride;
    switch (cpu_isa()) {
      case Isa::avx512: return pack_rows_avx512(src, k_stride, rows, kc, width, dst);
      case Isa::avx2: return pack_rows_avx2(src, k_stride, rows, kc, width, dst);
      default: break;
    }
    // Rows contiguous: each k step of a panel is a straight copy. Blocks of 16 k steps across
    // all panels, so every source row segment is read once, whole, while it is in L1 (panel by
    // panel, each k step would touch a new row: a new page for large matrices).
    for (int64_t tb = 0; tb < kc; tb += 16) {
      int64_t tn = std::min<int64_t>(16, kc - tb);
      for (int64_t q = 0; q < panels; ++q) {
        int w = int(std::min<int64_t>(width, rows - q * width));
        for (int64_t t = tb; t < tb + tn; ++t) {
          const float* s = data + r0 + q * width + (k0 + t) * k_stride;
          float* d = dst + (q * kc + t) * width;
          for (int i = 0; i < w; ++i) d[i] = s[i];
          for (int i = w; i < width; ++i) d[i] = 0.f;
        }
      }
    }
    return;
  }
  // k contiguous: a transpose.
  for (int64_t q = 0; q < panels; ++q, dst += kc * width) {
    int64_t rq = r0 + q * width;
    int w = int(std::min<int64_t>(width, rows - q * width));
    const float* src[64];
    for (int i = 0; i < width; ++i) src[i] = i < w ? data + (rq + i) * row_stride + k0 : nullptr;
    pack_transpose(src, width, kc, dst);
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
  switch (cpu_isa()) {
    case Isa::avx512: return pack_transpose_avx512(rows, width, len, dst);
    case Isa::avx2: return pack_transpose_avx2(rows, width, len, dst);
    default: return pack_transpose_generic(rows, width, len, dst);
  }
}

}  // namespace convnet
