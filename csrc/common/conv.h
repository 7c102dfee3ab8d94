// Convolution (cuda-convnet's layout: batch innermost) and fully-connected layers.
//
//   x  : (C, H, W, N)            images, image index innermost and contiguous
//   w  : (C / groups, fs, fs, F) filters; F = all filters of all groups. Group g reads channels
//                                [g*C/groups, (g+1)*C/groups) and owns filters [g*F/groups, ...)
//   y  : (F, Ho, Wo, N)          Ho = conv_out_size(H, fs, padding, stride), likewise Wo
//   b  : (F,)                    one bias per filter, shared over positions
//   FC : x (I, N), w (I, O), b (O,), y (O, N) = w^T x + b
// Backward ops write dx / dw / db, or add to them when `accumulate` (a layer whose output feeds
// several consumers sums their gradients).
#pragma once
#include "epilogue.h"
#include "op.h"
#include "shape.h"

namespace convnet {

struct ConvParams {
  int channels = 0, height = 0, width = 0, images = 0;  // x: (channels, height, width, images)
  int filters = 0, filter_size = 0;                    // w: (channels/groups, fs, fs, filters)
  int padding = 0, stride = 1, groups = 1;
  int out_h = 0, out_w = 0;                            // y: (filters, out_h, out_w, images)
  int variant = 0;                                     // 0 = default kernel
};

// Numbered kernel variants: ConvParams::variant / FcParams::variant select one (0 = the default);
// valid values are 0 .. conv_variant_count(op) - 1 on each backend, and the tests run them all.
// A variant the machine cannot run throws ArgError mentioning "not supported by this CPU".
enum class ConvOp : int {
  conv_fwd = 0, conv_bwd_data = 1, conv_bwd_weights = 2,
  fc_fwd = 3, fc_bwd_data = 4, fc_bwd_weights = 5
};
CONVNET_OP(int, conv_variant_count, (ConvOp op))

// `epi`: the layer's bias (F,) and ReLU fused into the store (epilogue.h); Epilogue{} for none.
CONVNET_OP(void, conv_fwd, (const ConvParams& p, const float* x, const float* w, float* y,
                            bool accumulate, const Epilogue& epi))
CONVNET_OP(void, conv_bwd_data, (const ConvParams& p, const float* dy, const float* w, float* dx,
                                 bool accumulate))
CONVNET_OP(void, conv_bwd_weights, (const ConvParams& p, const float* x, const float* dy,
                                    float* dw, bool accumulate))
// y (F, P, N) += b (F) for every position p and image n (P = Ho*Wo, or 1 for FC).
CONVNET_OP(void, bias_fwd, (float* y, const float* b, int64_t filters, int64_t per_filter))
// db (F) (+)= sum over positions and images of dy (F, P*N).
CONVNET_OP(void, bias_bwd, (const float* dy, float* db, int64_t filters, int64_t per_filter,
                            bool accumulate))

}  // namespace convnet
