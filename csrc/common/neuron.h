// Neurons (activation functions), forward and backward: cuda-convnet's set, selected by kind.
//
//   x, y, dy, dx : any shape, treated as flat arrays of n floats (activations are (C, H, W, N) or
//                  (features, N); the layout does not matter to an elementwise op).
//
// Forward y = f(x) (x may equal y: in place). Backward dx (+)= dy * f'(x), where f' is computed
// from whichever of x and y is cheaper and exact (neuron_bwd_reads() says which; the other pointer
// may be null). dx may equal dy.
//
//   kind          f(x)                      backward reads   f'
//   ident         x                         -                1
//   relu          max(x, 0)                 y                y > 0
//   logistic      1 / (1 + e^-x)            y                y (1 - y)
//   tanh[a,b]     a tanh(b x)               y                (b / a) (a - y)(a + y)    (a != 0)
//   brelu[a]      min(max(x, 0), a)         y                0 < y < a                 (a > 0)
//   softrelu      log(1 + e^x)              y                1 - e^-y
//   abs           |x|                       x                sign(x), 0 at 0
//   square        x^2                       x                2 x
//   sqrt          sqrt(x)                   y                1 / (2 y)
//   linear[a,b]   a x + b                   -                a
#pragma once
#include <cmath>

#include "op.h"

namespace convnet {

enum class NeuronKind : int {
  ident = 0, relu, logistic, tanh, brelu, softrelu, abs, square, sqrt, linear,
};
constexpr int kNumNeuronKinds = 10;
// cuda-convnet's spelling, indexed by NeuronKind.
inline const char* neuron_kind_name(NeuronKind k) {
  static const char* const names[kNumNeuronKinds] = {
      "ident", "relu", "logistic", "tanh", "brelu", "softrelu", "abs", "square", "sqrt", "linear"};
  int i = int(k);
  return i >= 0 && i < kNumNeuronKinds ? names[i] : "unknown";
}

struct NeuronParams {
  NeuronKind kind = NeuronKind::relu;
  float a = 0.f, b = 0.f;  // tanh[a,b], brelu[a], linear[a,b]; ignored by the other kinds
};

enum NeuronReads : int { kNeuronReadsNone = 0, kNeuronReadsX = 1, kNeuronReadsY = 2 };
inline int neuron_bwd_reads(NeuronKind k) {
  switch (k) {
    case NeuronKind::ident:
    case NeuronKind::linear: return kNeuronReadsNone;
    case NeuronKind::abs:
    case NeuronKind::square: return kNeuronReadsX;
    default: return kNeuronReadsY;
  }
}

// The maths once, for the CPU loops and the CUDA kernels: Neuron<K>::fwd(x, a, b) and
// Neuron<K>::grad(x, y, a, b) = f'(x). The kind is a template parameter so both backends switch on
// it once per call, outside their loops.
template <NeuronKind K>
struct Neuron;

template <> struct Neuron<NeuronKind::ident> {
  static CONVNET_HD float fwd(float x, float, float) { return x; }
  static CONVNET_HD float grad(float, float, float, float) { return 1.f; }
};
template <> struct Neuron<NeuronKind::relu> {
  static CONVNET_HD float fwd(float x, float, float) { return x > 0.f ? x : 0.f; }
  // float(bool), not a branch: the CPU loops must stay branch-free to vectorise.
  static CONVNET_HD float grad(float, float y, float, float) { return float(y > 0.f); }
};
template <> struct Neuron<NeuronKind::logistic> {
  static CONVNET_HD float fwd(float x, float, float) { return 1.f / (1.f + expf(-x)); }
  static CONVNET_HD float grad(float, float y, float, float) { return y * (1.f - y); }
};
template <> struct Neuron<NeuronKind::tanh> {
  static CONVNET_HD float fwd(float x, float a, float b) { return a * tanhf(b * x); }
  // (b/a)(a - y)(a + y) = a b (1 - tanh^2): the factored form keeps precision near |y| = a.
  static CONVNET_HD float grad(float, float y, float a, float b) {
    return (b / a) * ((a - y) * (a + y));
  }
};
template <> struct Neuron<NeuronKind::brelu> {
  static CONVNET_HD float fwd(float x, float a, float) { return x > 0.f ? (x < a ? x : a) : 0.f; }
  static CONVNET_HD float grad(float, float y, float a, float) {
    return float(y > 0.f) * float(y < a);
  }
};
template <> struct Neuron<NeuronKind::softrelu> {
  // log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, no loss for very negative.
  static CONVNET_HD float fwd(float x, float, float) {
    return (x > 0.f ? x : 0.f) + log1pf(expf(-fabsf(x)));
  }
  // 1 - e^-y = -expm1(-y): exact also when y is tiny (very negative x).
  static CONVNET_HD float grad(float, float y, float, float) { return -expm1f(-y); }
};
template <> struct Neuron<NeuronKind::abs> {
  static CONVNET_HD float fwd(float x, float, float) { return fabsf(x); }
  static CONVNET_HD float grad(float x, float, float, float) {
    return float(x > 0.f) - float(x < 0.f);
  }
};
template <> struct Neuron<NeuronKind::square> {
  static CONVNET_HD float fwd(float x, float, float) { return x * x; }
  static CONVNET_HD float grad(float x, float, float, float) { return 2.f * x; }
};
template <> struct Neuron<NeuronKind::sqrt> {
  static CONVNET_HD float fwd(float x, float, float) { return sqrtf(x); }
  static CONVNET_HD float grad(float, float y, float, float) { return 0.5f / y; }
};
template <> struct Neuron<NeuronKind::linear> {
  static CONVNET_HD float fwd(float x, float a, float b) { return a * x + b; }
  static CONVNET_HD float grad(float, float, float a, float) { return a; }
};

// y = f(x).
CONVNET_OP(void, neuron_fwd, (const NeuronParams& p, const float* x, float* y, int64_t n))
// dx = dy * f'  (accumulate: dx += dy * f'). x or y may be null when the kind does not read it.
CONVNET_OP(void, neuron_bwd, (const NeuronParams& p, const float* dy, const float* x,
                              const float* y, float* dx, int64_t n, bool accumulate))

}  // namespace convnet
