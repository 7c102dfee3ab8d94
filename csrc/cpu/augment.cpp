// assemble_batch_cpu: the data pipeline's batch assembly (declared in csrc/common/augment.h).
//
// The output is (3, crop, crop, n) with the image index innermost, the sources are n separate
// (height, width, 3) images: a transpose. The work is split by output row (OpenMP over rows): one
// row of one block of 16 columns reads `crop` pixels from each of 16 images and writes, per
// channel, crop runs of 16 contiguous floats, so every run fills a whole cache line when n is a
// multiple of 16, and the block's source rows (16 * crop * 3 bytes) stay in L1.
//
// Variants (all tested; 0 picks one, see kStreamBytes):
//   1 portable        scalar loads, 16 columns per block; the reference for the others.
//   2 avx2            (augment_avx2.cpp) per pixel column, one 4-byte gather from each of 16 images
//                     (R, G, B and a byte it ignores), split into channel vectors of 8 floats.
//   3 avx2, streaming as 2 with non-temporal stores.
//   4 avx512          (augment_avx512.cpp) as 2 with 16-float vectors.
//   5 avx512, streaming as 4 with non-temporal stores.
// A gather reads one byte past the pixel, which lies outside the image only for its bottom-right
// pixel; a block whose window holds that pixel in this row goes through the portable code.
// Streaming stores skip the read-for-ownership of every output line, which was the limit: an
// AlexNet batch (77 MB) is far larger than the caches, so the trainer reads it from memory
// anyway; measured on one core, 128 x 224x224 images: 3,100-4,200 images/s cached, 9,000-10,000
// streaming. A block streams only when its stores are line-aligned (n a multiple of 16 and a
// 64-byte aligned out; the loader's buffers are page-aligned), else it stores as usual.
#include "augment.h"

#include <omp.h>

#include <algorithm>

#include "augment_rows.h"
#include "check.h"
#include "isa.h"
#include "parallel.h"

namespace convnet {

template <bool kShift>
static void row_portable(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1) {
  const int64_t crop = b.p.crop, n = b.p.n, plane = crop * crop * n;
  for (int64_t jb = j0; jb < j1; jb += 16) {
    const int64_t m = std::min<int64_t>(16, j1 - jb);
    const uint8_t* px[16];
    int64_t step[16];
    float sh[3][16];
    for (int64_t i = 0; i < m; ++i) {
      px[i] = assemble_row_start(b, row, jb + i);
      step[i] = b.flips[jb + i] ? -3 : 3;
      for (int ch = 0; ch < 3; ++ch) sh[ch][i] = kShift ? b.shift[(jb + i) * 3 + ch] : 0.f;
    }
    for (int64_t c = 0; c < crop; ++c) {
      for (int ch = 0; ch < 3; ++ch) {
        const float mv = b.mean[(ch * crop + row) * crop + c];
        float* o = b.out + ch * plane + (row * crop + c) * n + jb;
        for (int64_t i = 0; i < m; ++i) {
          float v = float(px[i][ch]) - mv;
          if (kShift) v = v + sh[ch][i];
          o[i] = v;
        }
      }
      for (int64_t i = 0; i < m; ++i) px[i] += step[i];
    }
  }
}

void assemble_row_portable(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1) {
  if (b.shift)
    row_portable<true>(b, row, j0, j1);
  else
    row_portable<false>(b, row, j0, j1);
}

// Outputs from this size on are written with streaming stores by variant 0: well past a core's
// L2, so caching them only evicts the sources.
constexpr int64_t kStreamBytes = int64_t(4) << 20;

int assemble_batch_variants() {
  switch (cpu_isa_supported()) {
    case Isa::avx512: return 5;
    case Isa::avx2: return 3;
    default: return 1;
  }
}

void assemble_batch_cpu(const uint8_t* const* src, const int32_t* ys, const int32_t* xs,
                        const uint8_t* flips, const float* shift, const float* mean, float* out,
                        const AssembleParams& p, int variant) {
  const int64_t out_bytes = 3 * p.crop * p.crop * p.n * int64_t(sizeof(float));
  if (variant == 0) {
    const bool stream = out_bytes >= kStreamBytes;
    variant = cpu_isa() == Isa::avx512 ? 4 : cpu_isa() == Isa::avx2 ? 2 : 1;
    if (variant > 1 && stream) ++variant;
  }
  CONVNET_CHECK(variant >= 1 && variant <= assemble_batch_variants(),
                "assemble_batch: variant " << variant << " is not available on this CPU (1.."
                                           << assemble_batch_variants() << ")");
  if (p.n == 0 || p.crop == 0) return;
  const AssembleJob job{src, ys, xs, flips, shift, mean, out, p};
  auto row_fn = [variant](const AssembleJob& b, int64_t row) {
    switch (variant) {
      case 1: return assemble_row_portable(b, row, 0, b.p.n);
      case 2: return assemble_row_avx2(b, row, 0, b.p.n, false);
      case 3: return assemble_row_avx2(b, row, 0, b.p.n, true);
      case 4: return assemble_row_avx512(b, row, 0, b.p.n, false);
      default: return assemble_row_avx512(b, row, 0, b.p.n, true);
    }
  };
  const int64_t crop = p.crop;
  // Whole rows per thread: each thread's writes are crop * n contiguous floats per channel.
  const bool threaded = 3 * crop * crop * p.n >= kMinParallelWork && omp_get_max_threads() > 1;
#pragma omp parallel for schedule(static) if (threaded)
  for (int64_t row = 0; row < crop; ++row) row_fn(job, row);
}

}  // namespace convnet
