// The packing loops of conv_operands.h (vectorised per ISA: see CONVNET_PACK_CLONES).
#include "conv_operands.h"

namespace convnet {

// rows = im2col columns (oy, ox, n), k = taps (c, ky, kx): each k step of a panel copies runs of
// contiguous image rows (or writes zeros where the window is outside the image). Panel by panel:
// the panel's writes stay in a few cache lines, and consecutive taps (kx) read consecutive pixels.
CONVNET_PACK_CLONES
void pack_image_columns(const ImageGeometry& g, int64_t r0, int64_t rows, int64_t k0,
                        int64_t kc, int width, float* dst) {
  ImageGeometry::Run runs[64];  // a panel is at most 64 columns wide
  int64_t taps = int64_t(g.fs) * g.fs;
  for (int64_t q = 0; q * width < rows; ++q, dst += kc * width) {
    int w = int(std::min<int64_t>(width, rows - q * width)), nruns = 0;
    g.for_each_run(r0 + q * width, w, [&](const ImageGeometry::Run& r) { runs[nruns++] = r; });
    int64_t c = k0 / taps;
    int ky = int(k0 % taps) / g.fs, kx = int(k0 % taps) % g.fs;
    for (int64_t t = 0; t < kc; ++t) {
      float* d = dst + t * width;
      for (int u = 0; u < nruns; ++u) {
        const ImageGeometry::Run& r = runs[u];
        const float* s = g.source(r, c, ky, kx);
        float* dr = d + r.offset;
        if (s)
          for (int64_t i = 0; i < r.len; ++i) dr[i] = s[i];
        else
          for (int64_t i = 0; i < r.len; ++i) dr[i] = 0.f;
      }
      for (int i = w; i < width; ++i) d[i] = 0.f;
      if (++kx == g.fs) {
        kx = 0;
        if (++ky == g.fs) ky = 0, ++c;
      }
    }
  }
}

// rows = taps (c, ky, kx), k = im2col columns (oy, ox, n): a transpose, one run of columns at a
// time, each panel row reading one image row segment (or zeros).
void pack_image_taps(const ImageGeometry& g, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                     int width, float* dst) {
  int64_t taps = int64_t(g.fs) * g.fs;
  for (int64_t q = 0; q * width < rows; ++q, dst += kc * width) {
    int w = int(std::min<int64_t>(width, rows - q * width));
    int64_t rq = r0 + q * width;
    g.for_each_run(k0, kc, [&](const ImageGeometry::Run& run) {
      const float* src[64];
      for (int i = 0; i < width; ++i) {
        int64_t r = rq + i;
        src[i] = i < w ? g.source(run, r / taps, int(r % taps) / g.fs, int(r % taps) % g.fs)
                       : nullptr;
      }
      pack_transpose(src, width, run.len, dst + run.offset * width);
    });
  }
}

// rows = input channels c, k = (f, ky, kx): w[c, fs-1-ky, fs-1-kx, f] (filters are small).
CONVNET_PACK_CLONES
void pack_flipped_filters(const float* w, int64_t filters_total, int fs, int64_t r0,
                          int64_t rows, int64_t k0, int64_t kc, int width, float* dst) {
  int64_t taps = int64_t(fs) * fs;
  for (int64_t q = 0; q * width < rows; ++q, dst += kc * width) {
    int wq = int(std::min<int64_t>(width, rows - q * width));
    for (int64_t t = 0; t < kc; ++t) {
      int64_t kk = k0 + t, f = kk / taps, ky = fs - 1 - (kk % taps) / fs,
              kx = fs - 1 - (kk % taps) % fs;
      float* d = dst + t * width;
      for (int i = 0; i < wq; ++i) {
        int64_t c = r0 + q * width + i;
        d[i] = w[((c * fs + ky) * fs + kx) * filters_total + f];
      }
      for (int i = wq; i < width; ++i) d[i] = 0.f;
    }
  }
}

}  // namespace convnet
