// The conv weight gradient's split reduction (declared in partial_sums.h).
#include "cuda_check.h"
#include "grid_stride.cuh"
#include "index_width.cuh"
#include "partial_sums.h"

namespace convnet {
namespace {

// dw[i] (+)= sum over s of part[s*count + i], s in increasing order: the same bits every run.
// kVec4: 4 consecutive i as one float4 a split (count % 4 == 0, part and dw 16-byte aligned),
// each lane summed as the scalar path sums its element, so both give the same bits. I: the index
// type (index_width.cuh); a split's offset steps by count (in float4s: count / 4), no multiply.
template <bool kVec4, class I>
__global__ void sum_partials_kernel(const float* __restrict__ part, float* __restrict__ dw,
                                    I count, int splits, bool accumulate) {
  grid_stride_vec4<kVec4>(
      count,
      [&](I q) {
        const auto* p4 = reinterpret_cast<const float4*>(part);
        const I step = count / 4;
        float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
        I o = q;
        for (int s = 0; s < splits; ++s, o += step) {
          const float4 v = p4[o];
          sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
        }
        float4* out = reinterpret_cast<float4*>(dw) + q;
        if (accumulate) {
          const float4 d = *out;
          sum = make_float4(d.x + sum.x, d.y + sum.y, d.z + sum.z, d.w + sum.w);
        }
        *out = sum;
      },
      [&](I j) {
        float sum = 0.f;
        I o = j;
        for (int s = 0; s < splits; ++s, o += count) sum += part[o];
        dw[j] = accumulate ? dw[j] + sum : sum;
      });
}

}  // namespace

void sum_partials_cuda(const float* part, float* dw, int64_t count, int splits, bool accumulate) {
  if (count == 0) return;
  const int threads = 256;
  const bool vec = count % 4 == 0 && aligned16(part) && aligned16(dw);
  const unsigned grid = vec ? grid_for_quads(count, threads) : grid_for(count, threads);
  // Offsets reach splits*count (the last split's end) plus a grid's stride past the loop's end.
  with_index(int64_t(splits) * count + int64_t(grid) * threads, [&](auto index) {
    using I = decltype(index);
    if (vec)
      CONVNET_LAUNCH((sum_partials_kernel<true, I>), grid, threads, 0, current_stream(), part, dw,
                     I(count), splits, accumulate);
    else
      CONVNET_LAUNCH((sum_partials_kernel<false, I>), grid, threads, 0, current_stream(), part,
                     dw, I(count), splits, accumulate);
  });
}

}  // namespace convnet
