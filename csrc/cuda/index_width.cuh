// The host's choice of a kernel's index type (csrc/common/index_width.h): with_index(span, f)
// calls f(int()) when every offset the launch forms is bounded by `span` elements in magnitude
// and span < 2^31 and the 64-bit path is not forced, else f(int64_t()); f launches the kernel
// instance for decltype of its argument.
#pragma once
#include <cstdint>

#include "index_width.h"

namespace convnet {

inline bool int32_indices(int64_t span) {
  return span < (int64_t(1) << 31) && !wide_indices_forced();
}

template <class F>
void with_index(int64_t span, F&& launch) {
  if (int32_indices(span))
    launch(int());
  else
    launch(int64_t());
}

}  // namespace convnet
