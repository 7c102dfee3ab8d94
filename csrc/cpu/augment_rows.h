// The per-row workers behind assemble_batch_cpu (csrc/cpu/augment.cpp). Each fills output row
// `row` of all three channels for columns [j0, j1): out[ch][row][*][j0..j1).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "augment.h"

namespace convnet {

struct AssembleJob {
  const uint8_t* const* src;
  const int32_t* ys;
  const int32_t* xs;
  const uint8_t* flips;
  const float* shift;  // (n, 3) or null
  const float* mean;   // (3, crop, crop)
  float* out;          // (3, crop, crop, n)
  AssembleParams p;
};

// Address of the first pixel column `row` of column j reads (the rightmost one when mirrored).
inline const uint8_t* assemble_row_start(const AssembleJob& b, int64_t row, int64_t j) {
  const int64_t x = b.xs[j] + (b.flips[j] ? b.p.crop - 1 : 0);
  return b.src[j] + ((b.ys[j] + row) * b.p.width + x) * 3;
}

// The window of some column in [j0, j1) holds its image's bottom-right pixel in this row, where
// a 4-byte gather would read one byte past the image.
inline bool assemble_reads_last_pixel(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j)
    if (b.ys[j] + row == b.p.height - 1 && b.xs[j] + b.p.crop == b.p.width) return true;
  return false;
}

void assemble_row_portable(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1);

// The row driver shared by the SIMD variants: blocks of 16 columns go to block(j, stream_block),
// the rest (and blocks whose gathers would read past an image) to the portable loop. Streaming
// stores need n % 16 == 0 (every store of a block is then line-aligned when its first one is) and
// a line-aligned block start.
template <class Block>
inline void assemble_row_blocked(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1,
                                 bool stream, Block block) {
  stream = stream && b.p.n % 16 == 0;
  int64_t j = j0;
  for (; j + 16 <= j1; j += 16) {
    if (assemble_reads_last_pixel(b, row, j, j + 16))
      assemble_row_portable(b, row, j, j + 16);
    else
      block(j, stream && reinterpret_cast<uintptr_t>(b.out + row * b.p.crop * b.p.n + j) % 64 == 0);
  }
  if (j < j1) assemble_row_portable(b, row, j, j1);
  if (stream) _mm_sfence();  // the streamed rows are visible before the batch is handed over
}
// stream: non-temporal stores for the blocks whose addresses allow them.
void assemble_row_avx2(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1, bool stream);
void assemble_row_avx512(const AssembleJob& b, int64_t row, int64_t j0, int64_t j1, bool stream);

}  // namespace convnet
