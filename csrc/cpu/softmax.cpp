// Softmax and logistic-regression cost on the CPU.
// x (K, N): image n is the column x[k * N + n]. Threads take contiguous ranges of images; each
// walks its range in tiles of 64 images, streaming the K rows of the tile (64 contiguous floats
// each) once per pass, with per-image running values in small arrays the inner loops vectorise
// over. fast_exp keeps the exponentials in the vector loop; the loops are compiled for each SIMD
// path (isa_variants.h).
#include "softmax.h"

#include <cfloat>
#include <cmath>

#include "fast_exp.h"
#include "isa_variants.h"
#include "parallel.h"

namespace convnet {
namespace {

constexpr int kTile = 64;

// Images per thread below which a second thread is not worth waking.
int64_t min_images(int64_t classes) { return (kMinParallelWork + classes - 1) / classes; }

void check_labels(const char* op, const int32_t* labels, int64_t images, int64_t classes) {
  for (int64_t n = 0; n < images; ++n)
    if (labels[n] < 0 || labels[n] >= classes) throw_bad_label(op, n, labels[n], classes);
}

// Softmax of images [c0, c0 + w) into probs. With labels: also nll and rank (label logits first
// gathered, then counted against in the max pass).
CONVNET_BODY void softmax_tile_body(const float* x, float* probs, int64_t K, int64_t N,
                                    int64_t c0, int w, const int32_t* labels, float* nll,
                                    int32_t* rank) {
  float m[kTile], s[kTile], xl[kTile];
  int32_t cnt[kTile];
  for (int j = 0; j < w; ++j) {
    m[j] = -INFINITY;
    s[j] = 0.f;
    cnt[j] = 0;
    xl[j] = labels ? x[int64_t(labels[c0 + j]) * N + c0 + j] : 0.f;
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* xr = x + k * N + c0;
#pragma omp simd
    for (int j = 0; j < w; ++j) {
      m[j] = xr[j] > m[j] ? xr[j] : m[j];
      cnt[j] += xr[j] > xl[j];
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* xr = x + k * N + c0;
    float* pr = probs + k * N + c0;
#pragma omp simd
    for (int j = 0; j < w; ++j) {
      float e = fast_exp(xr[j] - m[j]);
      pr[j] = e;
      s[j] += e;
    }
  }
  if (labels) {
    for (int j = 0; j < w; ++j) {
      nll[c0 + j] = m[j] + std::log(s[j]) - xl[j];
      rank[c0 + j] = cnt[j];
    }
  }
  for (int j = 0; j < w; ++j) s[j] = 1.f / s[j];
  for (int64_t k = 0; k < K; ++k) {
    float* pr = probs + k * N + c0;
#pragma omp simd
    for (int j = 0; j < w; ++j) pr[j] *= s[j];
  }
}
CONVNET_ISA_VARIANTS(softmax_tile,
                     (const float* x, float* probs, int64_t K, int64_t N, int64_t c0, int w,
                      const int32_t* labels, float* nll, int32_t* rank),
                     (x, probs, K, N, c0, w, labels, nll, rank))

CONVNET_BODY void softmax_bwd_tile_body(const float* p, const float* dp, float* dx, int64_t K,
                                        int64_t N, int64_t c0, int w, bool accumulate) {
  float d[kTile];
  for (int j = 0; j < w; ++j) d[j] = 0.f;
  for (int64_t k = 0; k < K; ++k) {
    const float *pr = p + k * N + c0, *dr = dp + k * N + c0;
#pragma omp simd
    for (int j = 0; j < w; ++j) d[j] += pr[j] * dr[j];
  }
  for (int64_t k = 0; k < K; ++k) {
    const float *pr = p + k * N + c0, *dr = dp + k * N + c0;
    float* xr = dx + k * N + c0;
    if (accumulate) {
#pragma omp simd
      for (int j = 0; j < w; ++j) xr[j] += pr[j] * (dr[j] - d[j]);
    } else {
#pragma omp simd
      for (int j = 0; j < w; ++j) xr[j] = pr[j] * (dr[j] - d[j]);
    }
  }
}
CONVNET_ISA_VARIANTS(softmax_bwd_tile,
                     (const float* p, const float* dp, float* dx, int64_t K, int64_t N,
                      int64_t c0, int w, bool accumulate),
                     (p, dp, dx, K, N, c0, w, accumulate))

CONVNET_BODY void logreg_tile_body(const float* p, const int32_t* labels, float* nll,
                                   int32_t* rank, int64_t K, int64_t N, int64_t c0, int w) {
  float pl[kTile];
  int32_t cnt[kTile];
  for (int j = 0; j < w; ++j) {
    pl[j] = p[int64_t(labels[c0 + j]) * N + c0 + j];
    cnt[j] = 0;
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* pr = p + k * N + c0;
#pragma omp simd
    for (int j = 0; j < w; ++j) cnt[j] += pr[j] > pl[j];
  }
  for (int j = 0; j < w; ++j) {
    nll[c0 + j] = -std::log(pl[j] > FLT_MIN ? pl[j] : FLT_MIN);
    rank[c0 + j] = cnt[j];
  }
}
CONVNET_ISA_VARIANTS(logreg_tile,
                     (const float* p, const int32_t* labels, float* nll, int32_t* rank,
                      int64_t K, int64_t N, int64_t c0, int w),
                     (p, labels, nll, rank, K, N, c0, w))

// f(c0, w) for each tile of images, images split over threads.
template <class F>
void for_tiles(const SoftmaxParams& p, F&& f) {
  parallel_range(p.images, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; c += kTile) f(c, int(std::min<int64_t>(kTile, hi - c)));
  }, min_images(p.classes));
}

}  // namespace

void softmax_fwd_cpu(const SoftmaxParams& p, const float* x, float* probs) {
  for_tiles(p, [&](int64_t c0, int w) {
    softmax_tile(x, probs, p.classes, p.images, c0, w, nullptr, nullptr, nullptr);
  });
}

void softmax_bwd_cpu(const SoftmaxParams& p, const float* probs, const float* dprobs, float* dx,
                     bool accumulate) {
  for_tiles(p, [&](int64_t c0, int w) {
    softmax_bwd_tile(probs, dprobs, dx, p.classes, p.images, c0, w, accumulate);
  });
}

void softmax_xent_fwd_cpu(const SoftmaxParams& p, const float* x, const int32_t* labels,
                          float* probs, float* nll, int32_t* rank) {
  check_labels("softmax_xent_fwd", labels, p.images, p.classes);
  for_tiles(p, [&](int64_t c0, int w) {
    softmax_tile(x, probs, p.classes, p.images, c0, w, labels, nll, rank);
  });
}

void softmax_xent_bwd_cpu(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                          float scale, float* dx, bool accumulate) {
  check_labels("softmax_xent_bwd", labels, p.images, p.classes);
  const int64_t N = p.images;
  // Rows are independent: threads take ranges of classes; the one-hot test vectorises.
  parallel_range(p.classes, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const float* pr = probs + k * N;
      float* xr = dx + k * N;
      const int32_t kk = int32_t(k);
      if (accumulate) {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) xr[n] += scale * (pr[n] - (labels[n] == kk ? 1.f : 0.f));
      } else {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) xr[n] = scale * (pr[n] - (labels[n] == kk ? 1.f : 0.f));
      }
    }
  }, (kMinParallelWork + N - 1) / std::max<int64_t>(N, 1));
}

void logreg_fwd_cpu(const SoftmaxParams& p, const float* probs, const int32_t* labels, float* nll,
                    int32_t* rank) {
  check_labels("logreg_fwd", labels, p.images, p.classes);
  for_tiles(p, [&](int64_t c0, int w) {
    logreg_tile(probs, labels, nll, rank, p.classes, p.images, c0, w);
  });
}

void logreg_bwd_cpu(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                    float scale, float* dprobs, bool accumulate) {
  check_labels("logreg_bwd", labels, p.images, p.classes);
  const int64_t N = p.images;
  if (!accumulate) {
    parallel_range(p.classes * N, [&](int64_t lo, int64_t hi) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) dprobs[i] = 0.f;
    });
  }
  for (int64_t n = 0; n < N; ++n) {
    int64_t i = int64_t(labels[n]) * N + n;
    dprobs[i] += -scale / (probs[i] > FLT_MIN ? probs[i] : FLT_MIN);
  }
}

}  // namespace convnet
