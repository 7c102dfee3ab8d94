// Output sizes, written once for every backend and for Python (exposed by the bindings).
//
// cuda-convnet rounds UP: a layer covers the whole (padded) image, the last window may hang over
// its far edge, and the pixels it hangs over read as zero (like padding). So a 224 input with an
// 11x11 stride-4 filter gives 55 outputs (the paper's figure); Caffe and PyTorch round down.
#pragma once
#include "hd.h"

namespace convnet {

CONVNET_HD int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Convolution: modules = 1 + ceil((2*padding + img - filter) / stride). Needs
// filter <= img + 2*padding (checked by the callers, which name the op and shapes).
CONVNET_HD int conv_out_size(int img, int filter, int padding, int stride) {
  return 1 + ceil_div(2 * padding + img - filter, stride);
}

// Pooling: outputs = ceil((img - start - size) / stride) + 1, windows starting at `start`
// (0 or negative), clipped to the image.
CONVNET_HD int pool_out_size(int img, int size, int stride, int start) {
  return 1 + ceil_div(img - start - size, stride);
}

}  // namespace convnet
