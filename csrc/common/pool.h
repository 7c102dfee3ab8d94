// Spatial pooling (cuda-convnet's `pool` layer): max or average over square windows.
//
//   x, dx : (C, H, W, N)      image index innermost and contiguous
//   y, dy : (C, Ho, Wo, N)    Ho = pool_out_size(H, size, stride, start) unless given (outputsX)
// Output (oy, ox) pools rows start + oy*stride .. + size - 1 and likewise columns, clipped to the
// image: windows overhanging the far edge (cuda-convnet rounds the output count up) or starting
// before the image (start < 0) just have fewer pixels. Every window must hold at least one pixel.
//   max: the largest x in the window. Backward routes dy to ONE input: the first pixel, scanning
//        rows top to bottom and columns left to right, whose x equals y (so ties are deterministic
//        and the gradient's sum is preserved; cuda-convnet instead gives dy to every tied pixel).
//        y must be pool_fwd's output for this x: the backward finds the argmax by comparing.
//   avg: the sum over the window divided by the number of pixels in the clipped window (as
//        cuda-convnet does), so an edge output averages only real pixels.
// Backward writes dx, or adds to it when `accumulate`. x and y are unused by the avg backward.
//
// Winners (max only): pool_fwd given `winners` (one byte per element of y) records each window's
// winner so that pool_bwd_winners routes dy without reading x or y (C x H x W x N floats, the
// largest activation of a net, against C x Ho x Wo x N bytes). A byte holds
//   bits 0-6: the winner's offset in its clipped window, row-major: (iy - ylo) * (xhi - xlo) +
//             ix - xlo, by the tie rule above; kPoolNoWinner when y is NaN (x == y never holds:
//             the (x, y) backward routes nothing either);
//   bit 7:    kPoolNotPositive, y's bits are not > 0 as an int32 (+0, negatives, -0, negative
//             NaNs): a ReLU's gradient that masks by x > 0 drops this window's dy (the winner's x
//             is y), what pool_bwd_relu_bias does; plain pool_bwd_winners ignores the bit.
// So the winners backward gives the (x, y) backward's bits. Windows must fit 7 bits: size <=
// kPoolMaxWinnerSize (the bindings refuse more; such pools keep the (x, y) backward).
#pragma once
#include <cstdint>

#include "op.h"
#include "shape.h"

namespace convnet {

enum class PoolMode : int { max = 0, avg = 1 };

struct PoolParams {
  int channels = 0, height = 0, width = 0, images = 0;  // x: (channels, height, width, images)
  int size = 1, stride = 1, start = 0;                 // windows: size x size, every stride pixels
  int out_h = 0, out_w = 0;                            // y: (channels, out_h, out_w, images)
  PoolMode mode = PoolMode::max;
};

// The in-image part [*lo, *hi) of output o's window along one axis of length img.
CONVNET_HD void pool_window(int o, int size, int stride, int start, int img, int* lo, int* hi) {
  int first = start + o * stride;
  *lo = first < 0 ? 0 : first;
  *hi = first + size < img ? first + size : img;
}

// The outputs [*lo, *hi) whose windows contain input pixel i along one axis with `outs` outputs:
// start + o*stride <= i < start + o*stride + size.
CONVNET_HD void pool_outputs_of(int i, int size, int stride, int start, int outs, int* lo,
                                int* hi) {
  int a = i - start - size + 1;  // o*stride >= a
  int b = i - start;             // o*stride <= b, and b >= 0 whenever start <= i
  int l = a <= 0 ? 0 : (a + stride - 1) / stride;
  int h = b < 0 ? 0 : b / stride + 1;
  *lo = l;
  *hi = h < outs ? h : outs;
}

constexpr int kPoolNoWinner = 0x7f;
constexpr int kPoolNotPositive = 0x80;
constexpr int kPoolMaxWinnerSize = 11;  // 121 pixels: offsets 0..120 stay below kPoolNoWinner

// winners: null, or (channels, out_h, out_w, images) bytes to record (max mode only).
CONVNET_OP(void, pool_fwd, (const PoolParams& p, const float* x, float* y, uint8_t* winners))
CONVNET_OP(void, pool_bwd, (const PoolParams& p, const float* dy, const float* x, const float* y,
                            float* dx, bool accumulate))
// The max backward from pool_fwd's winners: the bits of pool_bwd given that forward's x and y.
CONVNET_OP(void, pool_bwd_winners, (const PoolParams& p, const float* dy, const uint8_t* winners,
                                    float* dx, bool accumulate))

}  // namespace convnet
