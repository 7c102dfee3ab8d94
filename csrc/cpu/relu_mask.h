// relu's gradient as an integer mask, shared by the neuron and the fused bias + ReLU backward.
#pragma once
#include <cstdint>
#include <cstring>

namespace convnet {

// dy where y > 0 (y's bits, as an int, are > 0), else +0. A float compare feeding a select does
// not vectorise on baseline x86-64 (it may trap, so it stays a branch, mispredicted half the time
// on real activations); integer ops do.
inline float relu_grad_times(float dy, float y) {
  int32_t yb, db;
  std::memcpy(&yb, &y, 4);
  std::memcpy(&db, &dy, 4);
  db &= -int32_t(yb > 0);
  std::memcpy(&dy, &db, 4);
  return dy;
}

}  // namespace convnet
