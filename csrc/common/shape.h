// Output sizes, written once for every backend and for Python (exposed by the bindings).
//
// cuda-convnet rounds UP: a layer covers the whole (padded) image, the last window may hang over
// its far edge, and the pixels it hangs over read as zero (like padding). So a 224 input with an
// 11x11 stride-4 filter gives 55 outputs (the paper's figure); Caffe and PyTorch round down.
//
// In 64 bits: a config may ask for a padding or stride near 2^31, and the sizes must come out as
// the formula says (then be refused for being too large), not wrap round.
#pragma once
#include <cstdint>

#include "hd.h"

namespace convnet {

// a >= 0 or a > -b (so that the result is a ceiling, not a truncation towards zero), b >= 1.
CONVNET_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Convolution: modules = 1 + ceil((2*padding + img - filter) / stride). Needs
// filter <= img + 2*padding (checked by the callers, which name the op and shapes).
CONVNET_HD int64_t conv_out_size(int64_t img, int64_t filter, int64_t padding, int64_t stride) {
  return 1 + ceil_div(2 * padding + img - filter, stride);
}

// Pooling: outputs = ceil((img - start - size) / stride) + 1, windows starting at `start`
// (0 or negative), clipped to the image.
CONVNET_HD int64_t pool_out_size(int64_t img, int64_t size, int64_t stride, int64_t start) {
  return 1 + ceil_div(img - start - size, stride);
}

}  // namespace convnet
