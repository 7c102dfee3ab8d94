// The horizontal pass of resize_bilinear_cpu (csrc/cpu/resize.cpp) as gathers: shared between
// resize.cpp, which builds the table once per image, and resize_avx512.cpp, which runs it per row.
#pragma once
#include <cstdint>
#include <vector>

namespace convnet {

// Output floats (out_w * channels, interleaved) in chunks of 16; chunk q sums taps[q] terms,
// term k of lane l being w[(q * max_taps + k) * 16 + l] * row[base[q] + idx[same]]. Terms past a
// lane's own taps have weight 0 and a valid index. span[q] = 1 + the chunk's largest idx: up to
// 32 (48) the terms come from two (three) vectors loaded at row + base[q] by permutes, beyond by
// gathers; the row has 48 floats of slack past its end. Reductions under 2 stay within 48.
struct GatherTable {
  int64_t outputs = 0, max_taps = 0;
  std::vector<int32_t> taps, base, span, idx;
  std::vector<float> w;
};

// out[o] = round(clamp(sum of the terms of output o)) for o < t.outputs.
void resize_horizontal_avx512(const float* row, const GatherTable& t, uint8_t* out);

}  // namespace convnet
