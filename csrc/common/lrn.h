// Response normalisation: cross-map (cuda-convnet's `cmrnorm`, the paper's LRN) and same-map
// (`rnorm`). For every element,
//   d = min_div + alpha * (sum of x^2 over the element's window)     ("denoms")
//   y = x * d^(-pow)
// Cross-map: the window is `size` channels c - size/2 .. c - size/2 + size - 1 at the same pixel
//            (for even sizes one more channel below c than above), clipped to [0, C).
// Same-map:  the window is size x size pixels, rows h - size/2 .. h - size/2 + size - 1 and
//            likewise columns, of the same channel, clipped to the image.
// Clipped windows just have fewer terms; alpha is not rescaled at the edges (cuda-convnet).
//
// `alpha` is the coefficient of the sum itself. cuda-convnet's config `scale` is divided by the
// window's element count first (alpha = scale/size cross-map, scale/size^2 same-map); the paper's
// alpha is used as is. convnet/ops/lrn.py converts both parameterisations.
//
//   x, y, dy, dx : (C, H, W, N)   image index innermost and contiguous
//   denoms       : (C, H, W, N)   d above: written by the forward, read by the backward
// Backward: dx = dy * d^(-pow) - 2 * alpha * pow * x * sum_{j : i in window(j)} dy_j * y_j / d_j,
// written to dx, or added to it when `accumulate`.
#pragma once
#include "op.h"

namespace convnet {

struct NormParams {
  int channels = 0, height = 0, width = 0, images = 0;  // (C, H, W, N) of every buffer
  int size = 1;                                        // window: channels, or pixels per side
  float alpha = 0.f;                                   // coefficient of the sum of squares
  float pow = 0.75f;                                   // beta
  float min_div = 1.f;                                 // k
};

// First channel (or row/column) of the window centred on c: c - size/2. The window ends at
// first + size - 1; the callers clip both ends.
CONVNET_HD int norm_window_first(int c, int size) { return c - size / 2; }

CONVNET_OP(void, lrn_fwd, (const NormParams& p, const float* x, float* y, float* denoms))
CONVNET_OP(void, lrn_bwd, (const NormParams& p, const float* dy, const float* x, const float* y,
                           const float* denoms, float* dx, bool accumulate))
CONVNET_OP(void, rnorm_fwd, (const NormParams& p, const float* x, float* y, float* denoms))
CONVNET_OP(void, rnorm_bwd, (const NormParams& p, const float* dy, const float* x,
                             const float* y, const float* denoms, float* dx, bool accumulate))

}  // namespace convnet
