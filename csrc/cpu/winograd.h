// Winograd F(2x2, 3x3) convolution on the CPU (winograd.cpp, winograd_wgrad.cpp): the forward,
// data gradient and weight gradient of 3x3 stride-1 convolutions with 16 GEMMs in the
// transformed domain instead of one implicit GEMM of 9 taps, 2.25x fewer multiply-adds (less the
// round-up of odd outputs to whole 2x2 tiles). conv.cpp calls it where conv_uses_winograd() says
// so.
#pragma once
#include "conv.h"
#include "epilogue.h"

namespace convnet {

// ConvParams::variant of conv_fwd and conv_bwd_data on the CPU that forces Winograd (with the
// micro-kernel variant 0 would pick); variants 1..4 force the direct implicit GEMM with that
// micro-kernel, and 0 chooses (conv_uses_winograd).
constexpr int kWinogradVariant = 5;

// ConvParams::variant of conv_bwd_weights on the CPU that forces Winograd (winograd_wgrad.cpp);
// its variant 5 is the direct kernel (conv_wgrad.h), so Winograd's comes after it.
constexpr int kWinogradWgradVariant = kWinogradVariant + 1;

// Whether conv_fwd / conv_bwd_data with `p` run Winograd (conv_bwd_weights: pass
// kWinogradWgradVariant as `forcing`): always for the forcing variant (throws ArgError naming
// `op` unless the filters are 3x3 with stride 1), never for the other nonzero ones; for
// variant 0 by the environment variable CONVNET_WINOGRAD (read at each call): "on" wherever it
// applies, "off" never, unset or "auto" where it applies and both channels and filters per group
// are at least kWinogradMinChannels (fewer and the GEMMs are too thin to gain from the 2.25x).
constexpr int kWinogradMinChannels = 64;
bool conv_uses_winograd(ConvOp pass, const ConvParams& p);

// CONVNET_WINOGRAD as variant 0 reads it: "auto", "on" or "off" (unset or empty: "auto");
// throws ArgError naming `op` for any other value.
const char* winograd_setting(const char* op);

// y (F, Ho, Wo, N) (+)= conv(x, w), then the epilogue on each output as it is written.
void winograd_conv_fwd(const ConvParams& p, const float* x, const float* w, float* y,
                       bool accumulate, const Epilogue& epi);
// dx (C, H, W, N) (+)= the data gradient: dy convolved with the rotated, transposed filters.
void winograd_conv_bwd_data(const ConvParams& p, const float* dy, const float* w, float* dx,
                            bool accumulate);
// dw (C/groups, 3, 3, F) (+)= the weight gradient (winograd_wgrad.cpp).
void winograd_conv_bwd_weights(const ConvParams& p, const float* x, const float* dy, float* dw,
                               bool accumulate);

}  // namespace convnet
