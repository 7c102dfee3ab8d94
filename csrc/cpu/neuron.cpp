// Neurons on the CPU: one loop per kind (Neuron<K> from neuron.h, inlined), chosen by a switch
// outside the loop; split over threads in contiguous chunks.
#include "neuron.h"

#include <cstring>

#include "check.h"
#include "parallel.h"

namespace convnet {
namespace {

template <NeuronKind K>
void fwd_loop(const NeuronParams& p, const float* x, float* y, int64_t n) {
  const float a = p.a, b = p.b;
  parallel_range(n, [&](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) y[i] = Neuron<K>::fwd(x[i], a, b);
  });
}

// relu's gradient as an integer mask: dy where y > 0 (y's bits, as an int, are > 0), else +0.
// A float compare feeding a select does not vectorise on baseline x86-64 (it may trap, so it
// stays a branch, mispredicted half the time on real activations); integer ops do.
inline float relu_grad_times(float dy, float y) {
  int32_t yb, db;
  std::memcpy(&yb, &y, 4);
  std::memcpy(&db, &dy, 4);
  db &= -int32_t(yb > 0);
  std::memcpy(&dy, &db, 4);
  return dy;
}

template <NeuronKind K>
void bwd_loop(const NeuronParams& p, const float* dy, const float* x, const float* y, float* dx,
              int64_t n, bool accumulate) {
  const float a = p.a, b = p.b;
  // A kind that does not read x (or y) gets a null pointer; the compiler drops the dead load, but
  // the index must not touch the pointer, so substitute dy (always valid) for a missing operand.
  const float* xs = x ? x : dy;
  const float* ys = y ? y : dy;
  parallel_range(n, [&](int64_t lo, int64_t hi) {
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
      for (int64_t i = lo; i < hi; ++i) dx[i] += dy[i] * Neuron<K>::grad(xs[i], ys[i], a, b);
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) dx[i] = dy[i] * Neuron<K>::grad(xs[i], ys[i], a, b);
    }
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
