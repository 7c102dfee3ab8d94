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

// Resampling of a decoded image onto the grid the pipeline stores (the shorter side to 256, or
// just a training crop's window of that): Pillow's BILINEAR filter, i.e. a triangle whose support
// widens with the reduction factor (antialiased when shrinking), taps clipped to the image and
// renormalised. The source rectangle box = (x0, y0, x1, y1), in pixel edges, is mapped onto the
// whole output; output pixel (i, j) is centred on source (y0 + (i + 0.5) * (y1 - y0) / out_h,
// x0 + (j + 0.5) * (x1 - x0) / out_w) and may draw on pixels just outside the box.
struct ResizeParams {
  int64_t src_h, src_w;  // src: uint8 (src_h, src_w, channels), rows contiguous
  int64_t out_h, out_w;  // out: uint8 (out_h, out_w, channels)
  int64_t channels;      // 1..4
  double box[4];         // x0, y0, x1, y1 with 0 <= x0 < x1 <= src_w, 0 <= y0 < y1 <= src_h
  int variant = 0;       // 0 best; 1 SSE, a pixel per vector; 2 AVX-512 gathers (resize.cpp)
};

// Separable, vertical pass first (over the source columns the output needs) into float rows,
// then horizontal, rounded to nearest once at the end; one thread (the loader's workers each
// resize their own images).
void resize_bilinear_cpu(const uint8_t* src, uint8_t* out, const ResizeParams& p);

// Variants this CPU can run: 1..resize_bilinear_variants().
int resize_bilinear_variants();

}  // namespace convnet
