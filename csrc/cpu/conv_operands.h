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

// The im2col matrix as a B operand: rows = columns (oy, ox, n), k = taps (c, ky, kx).
// Each k step of a panel copies contiguous image rows.
struct ImageColumnsOperand final : GemmOperand {
  ImageGeometry g;
  explicit ImageColumnsOperand(const ImageGeometry& geo) : g(geo) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    ImageGeometry::Run runs[64];  // a panel is at most 64 columns wide
    for (int64_t q = 0; q * width < rows; ++q, dst += kc * width) {
      int w = int(std::min<int64_t>(width, rows - q * width)), nruns = 0;
      g.for_each_run(r0 + q * width, w, [&](const ImageGeometry::Run& r) { runs[nruns++] = r; });
      int64_t taps = int64_t(g.fs) * g.fs, c = k0 / taps;
      int ky = int(k0 % taps) / g.fs, kx = int(k0 % taps) % g.fs;
      for (int64_t t = 0; t < kc; ++t) {
        float* d = dst + t * width;
        for (int u = 0; u < nruns; ++u) {
          const ImageGeometry::Run& r = runs[u];
          const float* s = g.source(r, c, ky, kx);
          if (s)
            for (int64_t i = 0; i < r.len; ++i) d[r.offset + i] = s[i];
          else
            for (int64_t i = 0; i < r.len; ++i) d[r.offset + i] = 0.f;
        }
        for (int i = w; i < width; ++i) d[i] = 0.f;
        if (++kx == g.fs) {
          kx = 0;
          if (++ky == g.fs) ky = 0, ++c;
        }
      }
    }
  }
};

// The im2col matrix as an A operand: rows = taps (c, ky, kx), k = columns (oy, ox, n); for the
// weight gradient, where the reduction runs over every position and image.
struct ImageTapsOperand final : GemmOperand {
  ImageGeometry g;
  explicit ImageTapsOperand(const ImageGeometry& geo) : g(geo) {}

  void pack(int64_t r0, int64_t rows, int64_t k0, int64_t kc, int width,
            float* dst) const override {
    int64_t taps = int64_t(g.fs) * g.fs;
    for (int64_t q = 0; q * width < rows; ++q, dst += kc * width) {
      int w = int(std::min<int64_t>(width, rows - q * width));
      for (int i = 0; i < width; ++i) {
        if (i >= w) {
          for (int64_t t = 0; t < kc; ++t) dst[t * width + i] = 0.f;
          continue;
        }
        int64_t r = r0 + q * width + i, c = r / taps;
        int ky = int(r % taps) / g.fs, kx = int(r % taps) % g.fs;
        g.for_each_run(k0, kc, [&](const ImageGeometry::Run& run) {
          float* d = dst + run.offset * width + i;
          const float* s = g.source(run, c, ky, kx);
          if (s)
            for (int64_t u = 0; u < run.len; ++u) d[u * width] = s[u];
          else
            for (int64_t u = 0; u < run.len; ++u) d[u * width] = 0.f;
        });
      }
    }
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
    int64_t taps = int64_t(fs) * fs;
    for (int64_t q = 0; q * width < rows; ++q, dst += kc * width) {
      int w_ = int(std::min<int64_t>(width, rows - q * width));
      for (int64_t t = 0; t < kc; ++t) {
        int64_t kk = k0 + t, f = kk / taps, ky = fs - 1 - (kk % taps) / fs,
                kx = fs - 1 - (kk % taps) % fs;
        float* d = dst + t * width;
        for (int i = 0; i < w_; ++i) {
          int64_t c = r0 + q * width + i;
          d[i] = w[((c * fs + ky) * fs + kx) * filters_total + f];
        }
        for (int i = w_; i < width; ++i) d[i] = 0.f;
      }
    }
  }
};

}  // namespace convnet
