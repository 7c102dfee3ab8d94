// Implicit-GEMM views of images and filters for the CPU convolution (conv.cpp): GEMM operands
// (gemm_pack.h) whose pack() gathers straight from the (C, H, W, N) image, so the im2col matrix
// is never stored; only the block being packed exists, in the GEMM's cache-sized panels.
//
// The im2col matrix of an image x (C, H, W, N) for a filter of size fs, padding and stride:
//   col[(c, ky, kx), (oy, ox, n)] = x[c, oy*stride - padding + ky, ox*stride - padding + kx, n]
// (zero outside the image: padding, and windows hanging over the far edge under the round-up
// rule). Because n is innermost in both, a run of consecutive columns within one output position
// is a contiguous run of one image row, or all zeros.
#pragma once
#include <algorithm>
#include <cstdint>

#include "gemm_pack.h"

namespace convnet {

struct ImageGeometry {
  const float* x;      // (channels, height, width, images), already offset to the group
  int64_t height, width, images;
  int fs, padding, stride;
  int64_t out_h, out_w;

  // Splits im2col columns [j0, j0 + count) into runs within one output position.
  struct Run {
    int64_t oy, ox, n, len, offset;
  };
  template <class F>
  void for_each_run(int64_t j0, int64_t count, F&& f) const {
    int64_t off = 0;
    while (off < count) {
      int64_t j = j0 + off, pos = j / images, n = j % images;
      int64_t len = std::min(images - n, count - off);
      f(Run{pos / out_w, pos % out_w, n, len, off});
      off += len;
    }
  }
  // The image row segment under run r for filter tap (c, ky, kx), or nullptr if it is outside.
  const float* source(const Run& r, int64_t c, int ky, int kx) const {
    int64_t iy = r.oy * stride - padding + ky, ix = r.ox * stride - padding + kx;
    if (iy < 0 || iy >= height || ix < 0 || ix >= width) return nullptr;
    return x + ((c * height + iy) * width + ix) * images + r.n;
  }
};

void pack_image_columns(const ImageGeometry& g, int64_t r0, int64_t rows, int64_t k0,
                        int64_t kc, int width, float* dst);
void pack_image_taps(const ImageGeometry& g, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                     int width, float* dst);
void pack_flipped_filters(const float* w, int64_t filters_total, int fs, int64_t r0,
                          int64_t rows, int64_t k0, int64_t kc, int width, float* dst);

// The im2col matrix as a B operand: rows = columns (oy, ox, n), k = taps (c, ky, kx).
// Each k step of a panel copies contiguous image rows.
struct ImageColumnsOperand final : GemmOperand {
  ImageGeometry g;
  explicit ImageColumnsOperand(const ImageGeometry& geo) : g(geo) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    pack_image_columns(g, r0, rows, k0, kc, width, dst);
  }
  // A panel within one output position (the batch a multiple of the panel width, as in training)
  // is, at every tap, one segment of an image row: packed by copying that segment.
  bool row_pointers(int64_t r0, int64_t k0, int64_t kc, int width,
                    const float** ptrs) const override {
    if (r0 % g.images + width > g.images) return false;
    ImageGeometry::Run run{(r0 / g.images) / g.out_w, (r0 / g.images) % g.out_w, r0 % g.images,
                           width, 0};
    int64_t taps = int64_t(g.fs) * g.fs, c = k0 / taps;
    int ky = int(k0 % taps) / g.fs, kx = int(k0 % taps) % g.fs;
    for (int64_t t = 0; t < kc; ++t) {
      const float* s = g.source(run, c, ky, kx);
      ptrs[t] = s ? s : kZeroRow;
      if (++kx == g.fs) {
        kx = 0;
        if (++ky == g.fs) ky = 0, ++c;
      }
    }
    return true;
  }
};

// The im2col matrix as an A operand: rows = taps (c, ky, kx), k = columns (oy, ox, n); for the
// weight gradient, where the reduction runs over every position and image.
struct ImageTapsOperand final : GemmOperand {
  ImageGeometry g;
  explicit ImageTapsOperand(const ImageGeometry& geo) : g(geo) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    pack_image_taps(g, r0, rows, k0, kc, width, dst);
  }
};

// Filters w (C/groups, fs, fs, F) of one group, rotated by 180 degrees and transposed, as an
// A operand: rows = input channels c, k = (f, ky, kx), element w[c, fs-1-ky, fs-1-kx, f0 + f].
// The data gradient of a stride-1 convolution is the convolution of dy with these filters.
struct FlippedFiltersOperand final : GemmOperand {
  const float* w;  // offset to the group's first filter
  int64_t filters_total;
  int fs;

  FlippedFiltersOperand(const float* w_, int64_t f, int fs_) : w(w_), filters_total(f), fs(fs_) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    pack_flipped_filters(w, filters_total, fs, r0, rows, k0, kc, width, dst);
  }
};

}  // namespace convnet
