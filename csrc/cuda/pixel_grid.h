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

// `op` names the caller in the error of a grid past CUDA's limits (2^31 - 1 blocks in x, 65535 in
// y: at most 2^31 - 1 pixels and 65535 x 128 images).
inline PixelGrid pixel_grid(int64_t pixels, int images, const char* op = "pixel_grid") {
  CONVNET_CHECK(pixels < (int64_t(1) << 31), op << ": " << pixels
                                                  << " pixels exceed the grid's x dimension");
  const int threads = images >= 128 ? 128 : (images + 31) / 32 * 32;
  const int64_t rows = (int64_t(images) + threads - 1) / threads;
  CONVNET_CHECK(rows <= 65535, op << ": " << images << " images (or filters) per pixel exceed "
                                     << "the grid's y dimension (65535 blocks of " << threads
                                     << ")");
  return {dim3(unsigned(pixels), unsigned(rows)), dim3(threads)};
}

}  // namespace convnet
