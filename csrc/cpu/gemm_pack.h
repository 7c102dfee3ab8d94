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
  // Fast path for a full panel of B (rows [r0, r0 + width)): ptrs[t] points at `width`
  // contiguous floats holding elements (r0 .., k0 + t), or at kZeroRow. Returns false when the
  // panel's rows are not contiguous in memory (the driver then calls pack()). The driver packs
  // such panels itself with straight row copies, no per-element index arithmetic.
  virtual bool row_pointers(int64_t /*r0*/, int64_t /*k0*/, int64_t /*kc*/, int /*width*/,
                            const float** /*ptrs*/) const {
    return false;
  }
  // An A operand held in the micro-kernels' panel layout already (Winograd's transformed
  // filters, laid out once per call and read by every chunk's GEMMs): the panels of rows r0,
  // r0 + width, ... from k step k0, panel q at the returned pointer + q * *panel_stride, step t
  // of it `t * width` floats further. nullptr when it has no panels of `width` rows: the driver
  // then packs.
  virtual const float* panels(int64_t /*r0*/, int64_t /*k0*/, int /*width*/,
                              int64_t* /*panel_stride*/) const {
    return nullptr;
  }
  // An A operand whose rows are contiguous in memory (element (r, k) at ptr[r + k * *k_step]):
  // the element (r0, k0), for micro-kernels that read A in place instead of packing it
  // (gemm_driver.h, kInPlaceMaxPanels). nullptr otherwise.
  virtual const float* rows_in_place(int64_t /*r0*/, int64_t /*k0*/, int64_t* /*k_step*/) const {
    return nullptr;
  }
  // An operand whose k steps are contiguous in memory (element (r, k) at ptr[r * *row_stride +
  // k]): the element (r0, k0), so that the driver can prefetch the rows a transposing pack will
  // read next. nullptr otherwise.
  virtual const float* rows_k_contiguous(int64_t /*r0*/, int64_t /*k0*/,
                                         int64_t* /*row_stride*/) const {
    return nullptr;
  }
  virtual ~GemmOperand() = default;
};

// 64 zeros: what row_pointers() points at outside an image.
extern const float kZeroRow[64];

// Packing loops are compiled for AVX-512, AVX2 and baseline x86-64, picked at load time
// (they are copies and transposes: worth vectorising, too simple to hand-write per ISA).
#define CONVNET_PACK_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// dst[t * width + i] = rows[i] ? rows[i][t] : 0 for t < len, i < width (<= 64): the transposing
// step of packing, when k is the contiguous direction of the source rows. In-register transposes
// on the AVX-512 and AVX2 paths (pack_avx512.cpp, pack_avx2.cpp), element copies otherwise.
void pack_transpose(const float* const* rows, int width, int64_t len, float* dst);
void pack_transpose_avx512(const float* const* rows, int width, int64_t len, float* dst);
void pack_transpose_avx2(const float* const* rows, int width, int64_t len, float* dst);

// The copying step of packing, when the rows are the contiguous direction of the source:
// element (r, t) at src[r + t * k_stride] for r < rows, t < kc, written as the panels pack()
// describes. Vector copies on the AVX-512 and AVX2 paths (pack_avx512.cpp, pack_avx2.cpp),
// element copies otherwise.
void pack_rows_avx512(const float* src, int64_t k_stride, int64_t rows, int64_t kc, int width,
                      float* dst);
void pack_rows_avx2(const float* src, int64_t k_stride, int64_t rows, int64_t kc, int width,
                    float* dst);
// How many k steps ahead those copies prefetch (into L2) rows of segment_bytes each: an eighth
// of L2 ahead, at most 64 steps.
int64_t pack_rows_prefetch_steps(int64_t segment_bytes);

void pack_strided(const float* data, int64_t row_stride, int64_t k_stride, int64_t r0,
                  int64_t rows, int64_t k0, int64_t kc, int width, float* dst);

// element(r, k) = data[r * row_stride + k * k_stride]; one of the strides is 1.
// With gathers_rows and row_stride 1 (a B stored (k, n)), full panels are handed to the driver
// as row pointers, so that the micro-kernel packs each panel in its first tile instead of a
// separate copy pass over B (sgemm_cpu, gemm.cpp).
struct StridedOperand final : GemmOperand {
  const float* data;
  int64_t row_stride, k_stride;
  bool gathers_rows;
  StridedOperand(const float* d, int64_t rs, int64_t ks, bool gather = false)
      : data(d), row_stride(rs), k_stride(ks), gathers_rows(gather) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    pack_strided(data, row_stride, k_stride, r0, rows, k0, kc, width, dst);
  }
  bool row_pointers(int64_t r0, int64_t k0, int64_t kc, int /*width*/,
                    const float** ptrs) const override {
    if (!gathers_rows || row_stride != 1) return false;
    const float* row = data + r0 + k0 * k_stride;
    for (int64_t t = 0; t < kc; ++t, row += k_stride) ptrs[t] = row;
    return true;
  }
  const float* rows_in_place(int64_t r0, int64_t k0, int64_t* k_step) const override {
    if (row_stride != 1) return nullptr;
    *k_step = k_stride;
    return data + r0 + k0 * k_stride;
  }
  const float* rows_k_contiguous(int64_t r0, int64_t k0, int64_t* rs) const override {
    if (k_stride != 1) return nullptr;
    *rs = row_stride;
    return data + r0 * row_stride + k0;
  }
};

}  // namespace convnet
