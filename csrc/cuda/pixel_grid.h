// Launch shape shared by the memory-bound activation kernels (pooling, normalisation): one thread
// per (pixel, image) of a (..., pixels, N) activation. blockIdx.x is the pixel; the N images
// of that pixel (contiguous in memory) spread over threadIdx.x and blockIdx.y, so a warp reads
// 32 consecutive floats and no thread needs a 64-bit division to find its coordinates.
#pragma once
#include <cstdint>

#include "cuda_check.h"

namespace convnet {

struct PixelGrid {
  dim3 grid, block;
};

inline PixelGrid pixel_grid(int64_t pixels, int images) {
  CONVNET_CHECK(pixels < (int64_t(1) << 31), "pixel_grid: " << pixels
                                                  << " pixels exceed the grid's x dimension");
  const int threads = images >= 128 ? 128 : (images + 31) / 32 * 32;
  return {dim3(unsigned(pixels), unsigned((images + threads - 1) / threads)), dim3(threads)};
}

}  // namespace convnet
