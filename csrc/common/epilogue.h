// The fused epilogue of the forward conv and fc ops: a layer's bias and ReLU applied to each
// output as the GEMM stores it, rather than in two more passes over y:
//   y[row, ...] = act(sum (+ y when accumulating) + bias[row]),   act = ReLU or none,
// row = the output's filter (conv, y (F, Ho, Wo, N)) or output unit (fc, y (O, N)); a row of C
// in GEMM terms. The same float operations in the same order as conv/fc, then bias_fwd, then
// neuron_fwd relu (alpha is 1 in these GEMMs, so no multiply-add contraction can differ), so a
// fused layer gives the bits of the unfused one.
#pragma once
#include <cstdint>

#include "hd.h"
#include "neuron.h"

namespace convnet {

struct Epilogue {
  const float* bias = nullptr;  // one per row, or nullptr
  bool relu = false;

  CONVNET_HD bool any() const { return bias != nullptr || relu; }
  CONVNET_HD float apply(float v, int64_t row) const {
    if (bias) v += bias[row];
    return relu ? Neuron<NeuronKind::relu>::fwd(v, 0.f, 0.f) : v;
  }
  // The same epilogue for a slice of the rows starting at `row0` (a group's filters).
  CONVNET_HD Epilogue from_row(int64_t row0) const {
    Epilogue e = *this;
    if (e.bias) e.bias += row0;
    return e;
  }
};

}  // namespace convnet
