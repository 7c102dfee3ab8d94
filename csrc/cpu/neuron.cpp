// Neurons on the CPU: one loop per kind, chosen by a switch outside the loop; split over threads
// in contiguous chunks, each chunk run by the loop compiled for the SIMD path in use
// (isa_variants.h). The maths is neuron.h's Neuron<K>, except the kinds whose libm calls
// (expf, tanhf, log1pf, expm1f) would keep the loop scalar: CpuNeuron swaps in vec_math.h's
// vectorisable versions (a few ulp, documented there; the CUDA kernels keep libm's).
#include "neuron.h"

#include "check.h"
#include "isa_variants.h"
#include "parallel.h"
#include "relu_mask.h"
#include "vec_math.h"

namespace convnet {
namespace {

template <NeuronKind K>
struct CpuNeuron : Neuron<K> {};
template <>
struct CpuNeuron<NeuronKind::logistic> : Neuron<NeuronKind::logistic> {
  CONVNET_VM static float fwd(float x, float, float) { return vm::vlogistic(x); }
};
template <>
struct CpuNeuron<NeuronKind::tanh> : Neuron<NeuronKind::tanh> {
  CONVNET_VM static float fwd(float x, float a, float b) { return a * vm::vtanh(b * x); }
};
template <>
struct CpuNeuron<NeuronKind::softrelu> : Neuron<NeuronKind::softrelu> {
  CONVNET_VM static float fwd(float x, float, float) { return vm::vsoftrelu(x); }
  CONVNET_VM static float grad(float, float y, float, float) { return -vm::vexpm1(-y); }
};

template <NeuronKind K>
CONVNET_BODY void fwd_chunk_body(float a, float b, const float* x, float* y, int64_t lo,
                                 int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) y[i] = CpuNeuron<K>::fwd(x[i], a, b);
}
CONVNET_ISA_VARIANTS_T(NeuronKind K, K, fwd_chunk,
                       (float a, float b, const float* x, float* y, int64_t lo, int64_t hi),
                       (a, b, x, y, lo, hi))

template <NeuronKind K>
void fwd_loop(const NeuronParams& p, const float* x, float* y, int64_t n) {
  parallel_range(n, [&](int64_t lo, int64_t hi) { fwd_chunk<K>(p.a, p.b, x, y, lo, hi); });
}

// xs, ys: x and y, or a stand-in (dy) for one the kind does not read; the loads are dead code.
template <NeuronKind K>
CONVNET_BODY void bwd_chunk_body(float a, float b, const float* dy, const float* xs,
                                 const float* ys, float* dx, int64_t lo, int64_t hi,
                                 bool accumulate) {
  if constexpr (K == NeuronKind::relu) {
    if (accumulate) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) dx[i] += relu_grad_times(dy[i], ys[i]);
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) dx[i] = relu_grad_times(dy[i], ys[i]);
    }
  } else if (accumulate) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) dx[i] += dy[i] * CpuNeuron<K>::grad(xs[i], ys[i], a, b);
  } else {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) dx[i] = dy[i] * CpuNeuron<K>::grad(xs[i], ys[i], a, b);
  }
}
CONVNET_ISA_VARIANTS_T(NeuronKind K, K, bwd_chunk,
                       (float a, float b, const float* dy, const float* xs, const float* ys,
                        float* dx, int64_t lo, int64_t hi, bool accumulate),
                       (a, b, dy, xs, ys, dx, lo, hi, accumulate))

template <NeuronKind K>
void bwd_loop(const NeuronParams& p, const float* dy, const float* x, const float* y, float* dx,
              int64_t n, bool accumulate) {
  // A kind that does not read x (or y) gets a null pointer: the index must not touch it.
  const float* xs = x ? x : dy;
  const float* ys = y ? y : dy;
  parallel_range(n, [&](int64_t lo, int64_t hi) {
    bwd_chunk<K>(p.a, p.b, dy, xs, ys, dx, lo, hi, accumulate);
  });
}

template <template <NeuronKind> class F, class... Args>
void dispatch(NeuronKind k, Args&&... args) {
  switch (k) {
    case NeuronKind::ident: return F<NeuronKind::ident>::run(args...);
    case NeuronKind::relu: return F<NeuronKind::relu>::run(args...);
    case NeuronKind::logistic: return F<NeuronKind::logistic>::run(args...);
    case NeuronKind::tanh: return F<NeuronKind::tanh>::run(args...);
    case NeuronKind::brelu: return F<NeuronKind::brelu>::run(args...);
    case NeuronKind::softrelu: return F<NeuronKind::softrelu>::run(args...);
    case NeuronKind::abs: return F<NeuronKind::abs>::run(args...);
    case NeuronKind::square: return F<NeuronKind::square>::run(args...);
    case NeuronKind::sqrt: return F<NeuronKind::sqrt>::run(args...);
    case NeuronKind::linear: return F<NeuronKind::linear>::run(args...);
  }
  CONVNET_CHECK(false, "neuron: unknown kind " << int(k));
}

template <NeuronKind K>
struct Fwd {
  static void run(const NeuronParams& p, const float* x, float* y, int64_t n) {
    fwd_loop<K>(p, x, y, n);
  }
};
template <NeuronKind K>
struct Bwd {
  static void run(const NeuronParams& p, const float* dy, const float* x, const float* y,
                  float* dx, int64_t n, bool accumulate) {
    bwd_loop<K>(p, dy, x, y, dx, n, accumulate);
  }
};

}  // namespace

void neuron_fwd_cpu(const NeuronParams& p, const float* x, float* y, int64_t n) {
  dispatch<Fwd>(p.kind, p, x, y, n);
}

void neuron_bwd_cpu(const NeuronParams& p, const float* dy, const float* x, const float* y,
                    float* dx, int64_t n, bool accumulate) {
  dispatch<Bwd>(p.kind, p, dy, x, y, dx, n, accumulate);
}

}  // namespace convnet
