// Softmax and logistic-regression cost on the CPU.
// x (K, N): image n is the column x[k * N + n]. Threads take contiguous ranges of images; each
// walks its range in tiles of 64 images, streaming the K rows of the tile (64 contiguous floats
// each) once per pass, with per-image running values in small arrays the inner loops vectorise
// over. vm::vexp (vec_math.h) keeps the exponentials in the vector loop; the loops are compiled for each SIMD
// path (isa_variants.h). The AVX-512 forward is written by hand instead: each lane is one image,
// 4 x 16 images per tile held in registers through the K classes (max, then exp and sum, then
// scale), with a shorter e^x for arguments <= 0 (vscalefps applies 2^n, subnormals included).
#include "softmax.h"

#include <immintrin.h>

#include <cfloat>
#include <cmath>
#include <vector>

#include "isa_variants.h"
#include "parallel.h"
#include "vec_math.h"

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
      float e = vm::vexp(xr[j] - m[j]);
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

// e^d for d <= 0 (or NaN, which stays NaN): vm::vexp's reduction and polynomial (as Horner in r),
// 2^n applied by vscalefps, which rounds subnormal results and gives 0 below -103.9.
CONVNET_TARGET_AVX512 inline __attribute__((always_inline)) __m512 exp_nonpos_avx512(__m512 d) {
  d = _mm512_max_ps(_mm512_set1_ps(-104.f), d);  // NaN d is returned as is
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), d);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// Softmax (and with labels the cost) of images [c0, c0 + 16 V): V vectors of 16 images each.
template <int V>
CONVNET_TARGET_AVX512 void softmax_cols_avx512(const float* x, float* probs, int64_t K, int64_t N,
                                               int64_t c0, const int32_t* labels, float* nll,
                                               int32_t* rank) {
  __m512 m[V], s[V], xl[V];
  __m512i cnt[V];
  const __m512i one = _mm512_set1_epi32(1);
  for (int v = 0; v < V; ++v) {
    m[v] = _mm512_set1_ps(-INFINITY);
    s[v] = _mm512_setzero_ps();
    cnt[v] = _mm512_setzero_si512();
    if (labels) {
      alignas(64) float g[16];
      for (int j = 0; j < 16; ++j) {
        int64_t n = c0 + 16 * v + j;
        g[j] = x[int64_t(labels[n]) * N + n];
      }
      xl[v] = _mm512_load_ps(g);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* xr = x + k * N + c0;
    for (int v = 0; v < V; ++v) {
      __m512 xv = _mm512_loadu_ps(xr + 16 * v);
      m[v] = _mm512_max_ps(xv, m[v]);  // a NaN x is skipped (max returns m)
      if (labels)
        cnt[v] = _mm512_mask_add_epi32(cnt[v], _mm512_cmp_ps_mask(xv, xl[v], _CMP_GT_OQ), cnt[v],
                                       one);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* xr = x + k * N + c0;
    float* pr = probs + k * N + c0;
    for (int v = 0; v < V; ++v) {
      __m512 e = exp_nonpos_avx512(_mm512_sub_ps(_mm512_loadu_ps(xr + 16 * v), m[v]));
      _mm512_storeu_ps(pr + 16 * v, e);
      s[v] = _mm512_add_ps(s[v], e);
    }
  }
  if (labels) {
    for (int v = 0; v < V; ++v) {
      alignas(64) float mv[16], sv[16], lv[16];
      _mm512_store_ps(mv, m[v]);
      _mm512_store_ps(sv, s[v]);
      _mm512_store_ps(lv, xl[v]);
      for (int j = 0; j < 16; ++j) nll[c0 + 16 * v + j] = mv[j] + std::log(sv[j]) - lv[j];
      _mm512_storeu_si512(rank + c0 + 16 * v, cnt[v]);
    }
  }
  for (int v = 0; v < V; ++v) s[v] = _mm512_div_ps(_mm512_set1_ps(1.f), s[v]);
  for (int64_t k = 0; k < K; ++k) {
    float* pr = probs + k * N + c0;
    for (int v = 0; v < V; ++v)
      _mm512_storeu_ps(pr + 16 * v, _mm512_mul_ps(_mm512_loadu_ps(pr + 16 * v), s[v]));
  }
}

// Images [lo, hi) of a thread: 64 at a time, then 16 at a time, the last < 16 by the loop body.
void softmax_range(const float* x, float* probs, int64_t K, int64_t N, int64_t lo, int64_t hi,
                   const int32_t* labels, float* nll, int32_t* rank) {
  int64_t c = lo;
  if (cpu_isa() == Isa::avx512) {
    for (; c + 64 <= hi; c += 64) softmax_cols_avx512<4>(x, probs, K, N, c, labels, nll, rank);
    for (; c + 16 <= hi; c += 16) softmax_cols_avx512<1>(x, probs, K, N, c, labels, nll, rank);
  }
  for (; c < hi; c += kTile)
    softmax_tile(x, probs, K, N, c, int(std::min<int64_t>(kTile, hi - c)), labels, nll, rank);
}

// f(c0, w) for each tile of images, images split over threads.
template <class F>
void for_tiles(const SoftmaxParams& p, F&& f) {
  parallel_range(p.images, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; c += kTile) f(c, int(std::min<int64_t>(kTile, hi - c)));
  }, min_images(p.classes));
}

}  // namespace

void softmax_fwd_cpu(const SoftmaxParams& p, const float* x, float* probs) {
  parallel_range(p.images, [&](int64_t lo, int64_t hi) {
    softmax_range(x, probs, p.classes, p.images, lo, hi, nullptr, nullptr, nullptr);
  }, min_images(p.classes));
}

void softmax_bwd_cpu(const SoftmaxParams& p, const float* probs, const float* dprobs, float* dx,
                     bool accumulate) {
  for_tiles(p, [&](int64_t c0, int w) {
    softmax_bwd_tile(probs, dprobs, dx, p.classes, p.images, c0, w, accumulate);
  });
}

SoftmaxCost softmax_xent_fwd_cpu(const SoftmaxParams& p, const float* x, const int32_t* labels,
                                 float* probs) {
  check_labels("softmax_xent_fwd", labels, p.images, p.classes);
  std::vector<float> nll(p.images);
  std::vector<int32_t> rank(p.images);
  parallel_range(p.images, [&](int64_t lo, int64_t hi) {
    softmax_range(x, probs, p.classes, p.images, lo, hi, labels, nll.data(), rank.data());
  }, min_images(p.classes));
  return sum_cost(nll.data(), rank.data(), p.images);
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

SoftmaxCost logreg_fwd_cpu(const SoftmaxParams& p, const float* probs, const int32_t* labels) {
  check_labels("logreg_fwd", labels, p.images, p.classes);
  std::vector<float> nll(p.images);
  std::vector<int32_t> rank(p.images);
  for_tiles(p, [&](int64_t c0, int w) {
    logreg_tile(probs, labels, nll.data(), rank.data(), p.classes, p.images, c0, w);
  });
  return sum_cost(nll.data(), rank.data(), p.images);
}

void logreg_record_cpu(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                       float* nll, int32_t* rank, CostRecord* record) {
  CostRecord r{0.0, 0, 0, -1, 0};
  for (int64_t n = 0; n < p.images; ++n) {
    if (labels[n] < 0 || labels[n] >= p.classes) {  // recorded, not thrown (see softmax.h)
      r.bad_image = n;
      r.bad_label = labels[n];
      *record = r;
      return;
    }
  }
  for_tiles(p, [&](int64_t c0, int w) {
    logreg_tile(probs, labels, nll, rank, p.classes, p.images, c0, w);
  });
  const SoftmaxCost c = sum_cost(nll, rank, p.images);
  r.logprob = c.logprob;
  r.top1 = c.top1;
  r.top5 = c.top5;
  *record = r;
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
