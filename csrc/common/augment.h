// Batch assembly for the data pipeline: crop, mirror, mean subtraction, colour shift and the
// transpose into the batch-innermost layout, in one pass over the stored uint8 images.
// Host only (the loader runs on the CPU whatever device trains), so there is no CUDA twin and this
// is a plain declaration rather than CONVNET_OP.
#pragma once
#include <cstdint>

namespace convnet {

struct AssembleParams {
  int64_t height, width;  // every source image: uint8 (height, width, 3), rows contiguous
  int64_t crop;           // output images are crop x crop
  int64_t n;              // output columns (images in the batch)
};

// Column j of the batch is src[j]'s crop x crop window whose top-left pixel is (ys[j], xs[j]),
// mirrored left-right when flips[j] != 0:
//   out[ch][r][c][j] = (float(src[j][ys[j] + r][xs[j] + (flips[j] ? crop-1-c : c)][ch])
//                       - mean[ch][r][c]) + shift[j][ch]
// evaluated in that order in float32 (so it matches numpy's subtract-then-add bit for bit); no
// addition when shift is null.
//   src:   n pointers to uint8 (height, width, 3) images (the same image may appear many times)
//   ys,xs: int32 (n,), 0 <= ys[j] <= height - crop, 0 <= xs[j] <= width - crop
//   flips: uint8 (n,);  shift: float32 (n, 3) or null;  mean: float32 (3, crop, crop)
//   out:   float32 (3, crop, crop, n)
// variant: 0 = the best this CPU runs (cpu_isa(); streaming stores for outputs >= 4 MiB);
// 1 = portable; 2, 3 = AVX2 gathers, cached / streaming stores; 4, 5 = AVX-512 likewise (see
// csrc/cpu/augment.cpp). Threads: OpenMP over output rows (omp_get_max_threads()).
void assemble_batch_cpu(const uint8_t* const* src, const int32_t* ys, const int32_t* xs,
                        const uint8_t* flips, const float* shift, const float* mean, float* out,
                        const AssembleParams& p, int variant);

// Variants this CPU can run: 1..assemble_batch_variants().
int assemble_batch_variants();

}  // namespace convnet
