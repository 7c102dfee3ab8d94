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
#pragma once
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

CONVNET_OP(void, pool_fwd, (const PoolParams& p, const float* x, float* y))
CONVNET_OP(void, pool_bwd, (const PoolParams& p, const float* dy, const float* x, const float* y,
                            float* dx, bool accumulate))

}  // namespace convnet
