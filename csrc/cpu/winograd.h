// Winograd F(2x2, 3x3) and F(2x2, 5x5) convolution on the CPU (winograd.cpp, winograd_wgrad.cpp):
// the forward, data gradient and weight gradient of 3x3 and 5x5 stride-1 convolutions with 16
// (36) GEMMs in the transformed domain instead of one implicit GEMM of 9 (25) taps, 2.25x (2.78x)
// fewer multiply-adds (less the round-up of odd outputs to whole 2x2 tiles). conv.cpp calls it
// where conv_uses_winograd() says so.
#pragma once
#include "conv.h"
#include "epilogue.h"

namespace convnet {

// ConvParams::variant of conv_fwd and conv_bwd_data on the CPU that forces Winograd (F(2x2, r x r)
// for r x r filters; its GEMMs with the micro-kernel variant 0 would pick); variants 1..4 force
// the direct implicit GEMM with that micro-kernel, and 0 chooses (conv_uses_winograd).
constexpr int kWinogradVariant = 5;

// ConvParams::variant of conv_bwd_weights on the CPU that forces Winograd (winograd_wgrad.cpp);
// its variant 5 is the direct kernel (conv_wgrad.h), so Winograd's comes after it.
constexpr int kWinogradWgradVariant = kWinogradVariant + 1;

// Whether the conv_fwd, conv_bwd_data or conv_bwd_weights `pass` with `p` runs Winograd: always
// for the pass's Winograd variant (throws ArgError naming the op unless the filters are 3x3 or
// 5x5 with stride 1), never for the other nonzero ones; for variant 0 by the environment
// variable CONVNET_WINOGRAD (read at each call): "on" wherever it applies, "off" never, unset or
// "auto" where it applies and winograd_pays.
bool conv_uses_winograd(ConvOp pass, const ConvParams& p);

// Where variant 0 takes Winograd by default (measured on the shared 2-core AMD EPYC Zen 4, one
// pass at a time against the direct path; BENCHMARKS.md):
// - 3x3: both channels and filters per group at least kWinogradMinChannels (fewer and the GEMMs
//   are too thin to gain from the 2.25x fewer multiply-adds);
// - 5x5: both at least kWinograd5MinChannels, where the 2.78x fewer multiply-adds outweigh the
//   thin GEMMs (AlexNet's conv2, 48 channels per group: forward 1.7x / 1.5x as fast at AVX-512
//   / AVX2, data gradient 1.7x / 1.5x; CIFAR's 32-channel layers 1.1-1.6x; its first layer, 3
//   channels: forward 0.54x at AVX-512). The weight gradient on the AVX-512 and AVX2 paths (not
//   the portable one): its 36 GEMMs of k = a chunk's columns ran conv2 1.43x as fast with the
//   AVX-512 micro-kernels. At AVX2, CIFAR's conv2 / conv3 (32 -> 32, 32 -> 64) ran 1.02 / 1.17x
//   the direct kernel once the transforms' planes were spread over the cache sets (0.88-0.94x
//   before), AlexNet's conv2 (48 channels, 128 filters per group) 1.13x and 0.97x in two runs,
//   so it stayed direct there; on the AMD Zen 5 (AVX2, two threads, alternating in one process)
//   conv2's weight gradient ran 1.72-1.74x as fast with Winograd at 128 images (222 -> 128 ms;
//   one thread 1.73x), 1.66 / 1.79 / 1.81x at 32 / 64 / 100, and Winograd takes it at every
//   width.
constexpr int kWinogradMinChannels = 64;
constexpr int kWinograd5MinChannels = 32;
bool winograd_pays(ConvOp pass, const ConvParams& p);

// CONVNET_WINOGRAD as variant 0 reads it: "auto", "on" or "off" (unset or empty: "auto");
// throws ArgError naming `op` for any other value.
const char* winograd_setting(const char* op);

// y (F, Ho, Wo, N) (+)= conv(x, w), then the epilogue on each output as it is written.
void winograd_conv_fwd(const ConvParams& p, const float* x, const float* w, float* y,
                       bool accumulate, const Epilogue& epi);
// dx (C, H, W, N) (+)= the data gradient: dy convolved with the rotated, transposed filters.
void winograd_conv_bwd_data(const ConvParams& p, const float* dy, const float* w, float* dx,
                            bool accumulate);
// dw (C/groups, r, r, F) (+)= the weight gradient (winograd_wgrad.cpp).
void winograd_conv_bwd_weights(const ConvParams& p, const float* x, const float* dy, float* dw,
                               bool accumulate);

}  // namespace convnet
