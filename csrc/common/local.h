// Locally-connected layers (cuda-convnet's `local`): a convolution whose filters are not shared,
// every output position has its own. Geometry as for conv (ConvParams, conv_out_size: the
// output size rounds up, windows hanging over the far edge read zeros):
//   x  : (C, H, W, N)                    images, image index innermost and contiguous
//   w  : (Ho, Wo, C/groups, fs, fs, F)   the filters of output position (oy, ox), each block
//                                        laid out as a conv layer's w: group g reads channels
//                                        [g*C/groups, (g+1)*C/groups), owns filters
//                                        [g*F/groups, (g+1)*F/groups)
//   y  : (F, Ho, Wo, N)
//   y[f, oy, ox, n] = sum over the group's channels c and the window taps (ky, kx) of
//                     w[oy, ox, c, ky, kx, f] * x[g*Cg + c, iy, ix, n],
//   iy = oy*stride - padding + ky, ix = ox*stride - padding + kx (Cg = C/groups)
// Biases are added by bias_fwd on y viewed as (F*Ho*Wo, N): one per filter and position.
// Backward ops write dx / dw, or add to them when `accumulate`.
#pragma once
#include "conv.h"
#include "op.h"

namespace convnet {

// Numbered kernel variants per op (ConvParams::variant, 0 = the default); the tests run them all.
enum class LocalOp : int { local_fwd = 0, local_bwd_data = 1, local_bwd_weights = 2 };
CONVNET_OP(int, local_variant_count, (LocalOp op))

CONVNET_OP(void, local_fwd, (const ConvParams& p, const float* x, const float* w, float* y,
                             bool accumulate))
CONVNET_OP(void, local_bwd_data, (const ConvParams& p, const float* dy, const float* w, float* dx,
                                  bool accumulate))
CONVNET_OP(void, local_bwd_weights, (const ConvParams& p, const float* x, const float* dy,
                                     float* dw, bool accumulate))

}  // namespace convnet
