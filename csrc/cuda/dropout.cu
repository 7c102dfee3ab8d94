// Dropout on the GPU (declared in csrc/common/dropout.h).
// Thread mapping: one thread per Philox block = 4 consecutive units (grid-stride), so each draw
// of 4 words serves 4 units, exactly as on the CPU. With x, y 16-byte and mask 4-byte aligned
// (kVec4) a thread moves a float4 and one 32-bit word of mask bytes; the last partial block and
// unaligned buffers go unit by unit. I: the index type (index_width.cuh).
#include "cuda_check.h"
#include "dropout.h"
#include "index_width.cuh"

namespace convnet {
namespace {

template <bool kVec4, class I>
__global__ void dropout_fwd_kernel(const float* x, float* y, uint8_t* mask, I n,
                                   uint32_t threshold, float scale, uint64_t seed,
                                   uint32_t stream, uint32_t step) {
  const I blocks = (n + 3) / 4, stride = I(gridDim.x) * I(blockDim.x);
  for (I b = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); b < blocks; b += stride) {
    const Philox4 r = philox_block(seed, stream, step, uint64_t(b));
    if (kVec4 && 4 * b + 3 < n) {
      const float4 xv = reinterpret_cast<const float4*>(x)[b];
      const bool k0 = keep_unit(r.v[0], threshold), k1 = keep_unit(r.v[1], threshold);
      const bool k2 = keep_unit(r.v[2], threshold), k3 = keep_unit(r.v[3], threshold);
      reinterpret_cast<float4*>(y)[b] =
          make_float4(k0 ? xv.x * scale : 0.f, k1 ? xv.y * scale : 0.f,
                      k2 ? xv.z * scale : 0.f, k3 ? xv.w * scale : 0.f);
      // Little-endian: byte j of the word is unit 4b + j, as on the CPU.
      reinterpret_cast<uint32_t*>(mask)[b] =
          uint32_t(k0) | uint32_t(k1) << 8 | uint32_t(k2) << 16 | uint32_t(k3) << 24;
    } else {
      for (int j = 0; j < 4; ++j) {
        const I i = 4 * b + j;
        if (i >= n) break;
        const bool k = keep_unit(r.v[j], threshold);
        y[i] = k ? x[i] * scale : 0.f;
        mask[i] = k ? 1 : 0;
      }
    }
  }
}

template <bool kVec4, class I>
__global__ void dropout_bwd_kernel(const float* dy, const uint8_t* mask, float* dx, I n,
                                   float scale, bool accumulate) {
  const I groups = (n + 3) / 4, stride = I(gridDim.x) * I(blockDim.x);
  for (I b = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); b < groups; b += stride) {
    if (kVec4 && 4 * b + 3 < n) {
      const float4 d = reinterpret_cast<const float4*>(dy)[b];
      const uint32_t m = reinterpret_cast<const uint32_t*>(mask)[b];
      float4 o = make_float4((m & 0xFFu) ? d.x * scale : 0.f, (m & 0xFF00u) ? d.y * scale : 0.f,
                             (m & 0xFF0000u) ? d.z * scale : 0.f,
                             (m & 0xFF000000u) ? d.w * scale : 0.f);
      if (accumulate) {
        const float4 old = reinterpret_cast<const float4*>(dx)[b];
        o = make_float4(old.x + o.x, old.y + o.y, old.z + o.z, old.w + o.w);
      }
      reinterpret_cast<float4*>(dx)[b] = o;
    } else {
      for (int j = 0; j < 4; ++j) {
        const I i = 4 * b + j;
        if (i >= n) break;
        const float g = mask[i] ? dy[i] * scale : 0.f;
        dx[i] = accumulate ? dx[i] + g : g;
      }
    }
  }
}

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

constexpr int kThreads = 256;

// Offsets reach 4 units per Philox block up to n plus a grid's stride of blocks.
int64_t dropout_span(int64_t n, unsigned grid) { return n + 4 * (int64_t(grid) * kThreads + 1); }

}  // namespace

void dropout_fwd_cuda(const DropoutParams& p, const float* x, float* y, uint8_t* mask,
                      int64_t n) {
  if (n == 0) return;
  const uint32_t threshold = keep_threshold(p.keep);
  const float scale = p.inverted ? 1.f / p.keep : 1.f;
  const unsigned grid = grid_for((n + 3) / 4, kThreads);
  with_index(dropout_span(n, grid), [&](auto index) {
    using I = decltype(index);
    if (aligned(x, 16) && aligned(y, 16) && aligned(mask, 4))
      CONVNET_LAUNCH((dropout_fwd_kernel<true, I>), grid, kThreads, 0, current_stream(), x, y,
                     mask, I(n), threshold, scale, p.seed, p.stream, p.step);
    else
      CONVNET_LAUNCH((dropout_fwd_kernel<false, I>), grid, kThreads, 0, current_stream(), x, y,
                     mask, I(n), threshold, scale, p.seed, p.stream, p.step);
  });
}

void dropout_bwd_cuda(const DropoutParams& p, const float* dy, const uint8_t* mask, float* dx,
                      int64_t n, bool accumulate) {
  if (n == 0) return;
  const float scale = p.inverted ? 1.f / p.keep : 1.f;
  const unsigned grid = grid_for((n + 3) / 4, kThreads);
  with_index(dropout_span(n, grid), [&](auto index) {
    using I = decltype(index);
    if (aligned(dy, 16) && aligned(dx, 16) && aligned(mask, 4))
      CONVNET_LAUNCH((dropout_bwd_kernel<true, I>), grid, kThreads, 0, current_stream(), dy,
                     mask, dx, I(n), scale, accumulate);
    else
      CONVNET_LAUNCH((dropout_bwd_kernel<false, I>), grid, kThreads, 0, current_stream(), dy,
                     mask, dx, I(n), scale, accumulate);
  });
}

}  // namespace convnet
