// resize_bilinear_cpu (declared in csrc/common/augment.h): the decoder's output onto the stored
// grid. Pillow's filter in float instead of Pillow's 8-bit intermediate, so one rounding, not two.
//
// Cost, in the common case (a 500x375 JPEG's 328x328 training window onto 224x224, 3 taps per
// axis): the vertical pass is a weighted sum of whole source rows, contiguous in memory and
// vectorised (uint8 -> float, FMA) for the CPU at hand, ~0.06 ms. The horizontal pass works on
// interleaved pixels. Variants (ResizeParams::variant, both tested; 0 picks):
//   1 SSE: one pixel's channels per vector, four pixels in flight; ~0.3 ms.
//   2 AVX-512 (resize_avx512.cpp): 16 interleaved outputs per vector, taps picked by permutes
//     (or gathers when the reduction is 2 or more); ~0.08 ms. Picked when it permutes or the
//     image has fewer than 3 channels: gathers of 3-4 channels lose to variant 1.
// (Per-pass times from a perf profile of one core.) Whole windows in benchmarks/bench_data.py:
// 4,600-5,300 per second, 6.8-7.9x Pillow's resize of the same windows.
#include <emmintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "augment.h"
#include "check.h"
#include "isa.h"
#include "resize_kernels.h"

namespace convnet {
namespace {

// Taps of one axis: output i reads `taps` source samples from first[i], weights w[i * max_taps + k].
struct AxisTaps {
  std::vector<int64_t> first, count;
  std::vector<float> w;
  int64_t max_taps = 0;
};

// Pillow's precompute_coeffs for the triangle filter, in double, normalised in double.
AxisTaps axis_taps(double lo, double hi, int64_t in_size, int64_t out_size) {
  AxisTaps t;
  const double scale = (hi - lo) / double(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = filterscale;  // the triangle's support is 1 at scale 1
  t.max_taps = int64_t(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.w.assign(size_t(out_size * t.max_taps), 0.f);
  std::vector<double> ww(size_t(t.max_taps));
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = lo + (double(i) + 0.5) * scale;
    const int64_t x0 = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t x1 = std::min<int64_t>(int64_t(center + support + 0.5), in_size);
    double sum = 0;
    int64_t n = 0;
    for (int64_t x = x0; x < x1 && n < t.max_taps; ++x, ++n) {
      const double d = std::fabs((double(x) - center + 0.5) / filterscale);
      ww[size_t(n)] = d < 1.0 ? 1.0 - d : 0.0;
      sum += ww[size_t(n)];
    }
    CONVNET_CHECK(n > 0 && sum > 0, "resize_bilinear: output sample " << i << " of " << out_size
                                        << " has no source pixels (box " << lo << ".." << hi
                                        << " of " << in_size << ")");
    t.first[i] = x0;
    t.count[i] = n;
    for (int64_t k = 0; k < n; ++k) t.w[size_t(i * t.max_taps + k)] = float(ww[size_t(k)] / sum);
  }
  return t;
}

// dst[x] = sum_k w[k] * rows[k][x] for x < len: whole rows, so it vectorises.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void weighted_rows(const uint8_t* const* rows, const float* w, int64_t taps, int64_t len,
                   float* dst) {
  for (int64_t x = 0; x < len; ++x) dst[x] = 0.f;
  for (int64_t k = 0; k < taps; ++k) {
    const uint8_t* r = rows[k];
    const float wk = w[k];
    for (int64_t x = 0; x < len; ++x) dst[x] += wk * float(r[x]);
  }
}

// Output pixels as 4-float vectors (the channels plus whatever follows, weighted but never
// stored): C = 3 or 4. Four pixels at a time so that four sums are in flight (one alone is
// bound by the add latency), each over the most taps any of the four has: the weights past a
// pixel's own taps are zero and the row buffer has zeroed slack past its end, so the extra
// terms add 0.
// cvtps2dq rounds to nearest (even) and the saturating packs clamp to 0..255; a pixel is stored
// as 4 bytes, the fourth overwritten by the next pixel, except where the image ends.
void horizontal_vec(const float* row, const AxisTaps& tx, int64_t col0, int64_t out_w, int64_t C,
                    uint8_t* out, bool last_row) {
  const int64_t T = tx.max_taps;
  auto store = [&](int64_t j, __m128 acc) {
    const __m128i q = _mm_cvtps_epi32(acc);
    const int32_t px = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(q, q), q));
    std::memcpy(out + j * C, &px, (last_row && j == out_w - 1) ? size_t(C) : sizeof px);
  };
  int64_t j = 0;
  for (; j + 4 <= out_w; j += 4) {
    const float* s[4];
    __m128 acc[4];
    for (int u = 0; u < 4; ++u) {
      s[u] = row + (tx.first[j + u] - col0) * C;
      acc[u] = _mm_setzero_ps();
    }
    const float* w = tx.w.data() + j * T;
    int64_t taps = 0;
    for (int u = 0; u < 4; ++u) taps = std::max(taps, tx.count[j + u]);
    for (int64_t k = 0; k < taps; ++k)
      for (int u = 0; u < 4; ++u)
        acc[u] = _mm_add_ps(acc[u], _mm_mul_ps(_mm_set1_ps(w[u * T + k]),
                                               _mm_loadu_ps(s[u] + k * C)));
    for (int u = 0; u < 4; ++u) store(j + u, acc[u]);
  }
  for (; j < out_w; ++j) {
    const float* s0 = row + (tx.first[j] - col0) * C;
    __m128 acc = _mm_setzero_ps();
    for (int64_t k = 0; k < tx.count[j]; ++k)
      acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(tx.w[size_t(j * T + k)]),
                                       _mm_loadu_ps(s0 + k * C)));
    store(j, acc);
  }
}

void horizontal_scalar(const float* row, const AxisTaps& tx, int64_t col0, int64_t out_w,
                       int64_t C, uint8_t* out) {
  for (int64_t j = 0; j < out_w; ++j) {
    const float* s = row + (tx.first[j] - col0) * C;
    const float* w = tx.w.data() + j * tx.max_taps;
    for (int64_t c = 0; c < C; ++c) {
      float acc = 0.f;
      for (int64_t k = 0; k < tx.count[j]; ++k) acc += w[k] * s[k * C + c];
      out[j * C + c] = uint8_t(std::lrint(std::min(std::max(acc, 0.f), 255.f)));
    }
  }
}

// The horizontal taps as per-lane indices relative to each chunk's first source float, for
// resize_horizontal_avx512 (the row starts at source column col0).
GatherTable gather_table(const AxisTaps& tx, int64_t col0, int64_t out_w, int64_t C) {
  GatherTable g;
  g.outputs = out_w * C;
  g.max_taps = tx.max_taps;
  const int64_t chunks = (g.outputs + 15) / 16, T = tx.max_taps;
  g.taps.assign(size_t(chunks), 0);
  g.base.assign(size_t(chunks), 0);
  g.span.assign(size_t(chunks), 0);
  g.idx.assign(size_t(chunks * T * 16), 0);
  g.w.assign(size_t(chunks * T * 16), 0.f);
  for (int64_t q = 0; q < chunks; ++q) {
    const int64_t o0 = q * 16, o1 = std::min(g.outputs, o0 + 16);
    const int64_t base = (tx.first[o0 / C] - col0) * C;  // the smallest index of the chunk
    int64_t span = 0;
    for (int64_t o = o0; o < o1; ++o) {
      const int64_t j = o / C, c = o % C, l = o - o0;
      g.taps[size_t(q)] = std::max<int32_t>(g.taps[size_t(q)], int32_t(tx.count[j]));
      for (int64_t k = 0; k < T; ++k) {
        // Past the pixel's own taps: weight 0 on a pixel that exists.
        const int64_t kk = k < tx.count[j] ? k : 0;
        const int64_t rel = (tx.first[j] + kk - col0) * C + c - base;
        span = std::max(span, rel);
        g.idx[size_t((q * T + k) * 16 + l)] = int32_t(rel);
        g.w[size_t((q * T + k) * 16 + l)] = k < tx.count[j] ? tx.w[size_t(j * T + k)] : 0.f;
      }
    }
    g.base[size_t(q)] = int32_t(base);
    g.span[size_t(q)] = int32_t(span + 1);
  }
  return g;
}

}  // namespace

int resize_bilinear_variants() { return cpu_isa_supported() == Isa::avx512 ? 2 : 1; }

void resize_bilinear_cpu(const uint8_t* src, uint8_t* out, const ResizeParams& p) {
  const int64_t C = p.channels;
  CONVNET_CHECK(C >= 1 && C <= 4, "resize_bilinear: channels must be 1..4, got " << C);
  CONVNET_CHECK(p.out_h > 0 && p.out_w > 0 && p.src_h > 0 && p.src_w > 0,
                "resize_bilinear: empty image (source " << p.src_h << "x" << p.src_w
                                                        << ", output " << p.out_h << "x"
                                                        << p.out_w << ")");
  const double x0 = p.box[0], y0 = p.box[1], x1 = p.box[2], y1 = p.box[3];
  CONVNET_CHECK(0 <= x0 && x0 < x1 && x1 <= double(p.src_w) && 0 <= y0 && y0 < y1 &&
                    y1 <= double(p.src_h),
                "resize_bilinear: box (" << x0 << ", " << y0 << ", " << x1 << ", " << y1
                                         << ") is not inside the " << p.src_h << "x" << p.src_w
                                         << " image");
  int variant = p.variant;
  CONVNET_CHECK(variant >= 0 && variant <= resize_bilinear_variants(),
                "resize_bilinear: variant " << variant << " is not available on this CPU (1.."
                                            << resize_bilinear_variants() << ")");
  const AxisTaps ty = axis_taps(y0, y1, p.src_h, p.out_h);
  const AxisTaps tx = axis_taps(x0, x1, p.src_w, p.out_w);
  // Only the source columns some output pixel reads go through the vertical pass.
  const int64_t col0 = tx.first.front();
  const int64_t col1 = tx.first.back() + tx.count.back();
  const int64_t len = (col1 - col0) * C;
  // Zeroed slack: the SSE pass reads up to (max_taps + 1) * C floats past a pixel, the AVX-512
  // pass 48 past a chunk's first.
  const int64_t slack = std::max<int64_t>((tx.max_taps + 1) * C, 48);
  std::vector<float> row(static_cast<size_t>(len + slack), 0.f);
  std::vector<const uint8_t*> rows(size_t(ty.max_taps));
  GatherTable gather;
  if (variant == 2 || (variant == 0 && cpu_isa() == Isa::avx512))
    gather = gather_table(tx, col0, p.out_w, C);
  if (variant == 0) {
    // Gathers lose to the SSE pass on 3-4 channels; permutes win everywhere (measured).
    const bool permutes = std::all_of(gather.span.begin(), gather.span.end(),
                                      [](int32_t s) { return s <= 48; });
    variant = cpu_isa() == Isa::avx512 && (permutes || C < 3) ? 2 : 1;
  }
  for (int64_t i = 0; i < p.out_h; ++i) {
    for (int64_t k = 0; k < ty.count[i]; ++k)
      rows[size_t(k)] = src + ((ty.first[i] + k) * p.src_w + col0) * C;
    weighted_rows(rows.data(), ty.w.data() + i * ty.max_taps, ty.count[i], len, row.data());
    uint8_t* o = out + i * p.out_w * C;
    if (variant == 2)
      resize_horizontal_avx512(row.data(), gather, o);
    else if (C >= 3)
      horizontal_vec(row.data(), tx, col0, p.out_w, C, o, i == p.out_h - 1);
    else
      horizontal_scalar(row.data(), tx, col0, p.out_w, C, o);
  }
}

}  // namespace convnet
