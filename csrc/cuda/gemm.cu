// SGEMM (declared in csrc/common/gemm.h):  C = alpha * op(A) * op(B) + beta * C, row-major.
//   op(A): (m, k), stored (m, k) with row stride lda, or (k, m) when trans_a
//   op(B): (k, n), stored (k, n) with row stride ldb, or (n, k) when trans_b
//   C    : (m, n), row stride ldc; beta == 0 never reads C. Then GemmParams::epi (bias per row,
//          ReLU: the fc forward's epilogue) on every element as it is stored.
// Any m, n, k (edges guarded), any leading dimensions; float4 paths only where aligned.
//
// Variants (GemmParams::variant; 0 picks one by shape):
//   1  naive: one thread per output, a dot product over k straight from global memory.
//      The readable reference. Block 32x8 threads, threadIdx.x along n (coalesced C and B rows).
//   2  shared-memory tiled 32x32: a 32x32 block computes a 32x32 tile of C, one output per thread,
//      staging 32x32 tiles of A and B in shared memory (loads coalesced for either transpose).
//   3  register-blocked 128x128 tile, 256 threads each owning 8x8 outputs, K step 8, float4 loads
//      where aligned, double-buffered shared memory (tile_gemm.cuh).
//   4  the same kernel with a 64x64 tile, 4x4 outputs per thread, K step 16: four times as many
//      blocks as variant 3 for the same C, so small and thin products still fill the GPU.
// Variant 0 picks 3 or 4 by whole waves on the device (tile_gemm.cuh's plan_tile; sgemm_plan_cuda
// says what it chose), and 1 when an operand spans 2^31 elements or more (the tiles index in
// 32 bits).
#include <algorithm>
#include <cstdint>

#include "bench_support.h"
#include "cuda_check.h"
#include "gemm.h"
#include "index_width.cuh"
#include "tile_gemm.cuh"

namespace convnet {
namespace {

// Variants 1 and 2 index in the type I (index_width.cuh): int where gemm_span fits in 32 bits,
// int64_t beyond (variant 0 runs variant 1 for operands of 2^31 elements or more).
template <class I>
__device__ __forceinline__ float load_a(const float* a, I lda, bool ta, I i, I p) {
  return ta ? a[p * lda + i] : a[i * lda + p];
}
template <class I>
__device__ __forceinline__ float load_b(const float* b, I ldb, bool tb, I p, I j) {
  return tb ? b[j * ldb + p] : b[p * ldb + j];
}

// ---- variant 1: naive. Thread (x, y) of block (bx, by) computes C(by*8 + y, bx*32 + x).
template <class I>
__global__ void sgemm_naive_kernel(GemmParams p, const float* __restrict__ a,
                                   const float* __restrict__ b, float* __restrict__ c) {
  const I j = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x);
  const I i = I(blockIdx.y) * I(blockDim.y) + I(threadIdx.y);
  if (i >= I(p.m) || j >= I(p.n)) return;
  const I k = I(p.k), lda = I(p.lda), ldb = I(p.ldb);
  float sum = 0.f;
  for (I q = 0; q < k; ++q)
    sum = fmaf(load_a(a, lda, p.trans_a, i, q), load_b(b, ldb, p.trans_b, q, j), sum);
  float* cij = c + (i * I(p.ldc) + j);
  *cij = p.epi.apply(p.beta == 0.f ? p.alpha * sum : fmaf(p.beta, *cij, p.alpha * sum), i);
}

// ---- variant 2: shared-memory tiles. Block (32, 32): thread (x, y) computes C(m0 + y, n0 + x).
// Each k step every thread loads one element of each tile; the global index that varies with
// threadIdx.x is the contiguous one of that operand's storage, so loads coalesce either way.
constexpr int kT2 = 32;
template <class I>
__global__ void __launch_bounds__(kT2* kT2)
    sgemm_tiled32_kernel(GemmParams p, const float* __restrict__ a, const float* __restrict__ b,
                         float* __restrict__ c) {
  __shared__ float sa[kT2][kT2 + 1];  // sa[i][q] = A(m0 + i, k0 + q); +1 avoids bank conflicts
  __shared__ float sb[kT2][kT2 + 1];  // sb[q][j] = B(k0 + q, n0 + j)
  const int tx = threadIdx.x, ty = threadIdx.y;
  const I m0 = I(blockIdx.y) * kT2, n0 = I(blockIdx.x) * kT2;
  const I m = I(p.m), n = I(p.n), k = I(p.k), lda = I(p.lda), ldb = I(p.ldb);
  float sum = 0.f;
  for (I k0 = 0; k0 < k; k0 += kT2) {
    // A(m0 + i, k0 + q): stored row-major (m, k) -> q = tx; transposed (k, m) -> i = tx.
    const int ai = p.trans_a ? tx : ty, aq = p.trans_a ? ty : tx;
    sa[ai][aq] =
        (m0 + ai < m && k0 + aq < k) ? load_a(a, lda, p.trans_a, m0 + ai, k0 + aq) : 0.f;
    // B(k0 + q, n0 + j): stored (k, n) -> j = tx; transposed (n, k) -> q = tx.
    const int bq = p.trans_b ? tx : ty, bj = p.trans_b ? ty : tx;
    sb[bq][bj] =
        (k0 + bq < k && n0 + bj < n) ? load_b(b, ldb, p.trans_b, k0 + bq, n0 + bj) : 0.f;
    __syncthreads();
#pragma unroll 8
    for (int q = 0; q < kT2; ++q) sum = fmaf(sa[ty][q], sb[q][tx], sum);
    __syncthreads();
  }
  const I i = m0 + ty, j = n0 + tx;
  if (i < m && j < n) {
    float* cij = c + (i * I(p.ldc) + j);
    *cij = p.epi.apply(p.beta == 0.f ? p.alpha * sum : fmaf(p.beta, *cij, p.alpha * sum), i);
  }
}

// ---- variants 3 and 4: register-blocked tiles (tile_gemm.cuh). Block (bx, by) computes the
// BM x BN tile of C at (by*BM, bx*BN); blockDim.x = S::kThreads. Sizes in 32 bits (checked by
// the launcher).
struct TileGemmDims {
  int m, n, k, lda, ldb, ldc;
  float alpha, beta;
  Epilogue epi;
};

template <class S, bool TA, bool TB>
__global__ void __launch_bounds__(S::kThreads, S::kMinBlocks)
    sgemm_tile_kernel(TileGemmDims p, const float* __restrict__ a, const float* __restrict__ b,
                      float* __restrict__ c, bool vec_a, bool vec_b, bool vec_c) {
  const int m0 = int(blockIdx.y) * S::kBM, n0 = int(blockIdx.x) * S::kBN;
  // A as the GEMM sees it is (m, k): stored (m, k) is contiguous along k, stored (k, m) along m.
  const MatrixLoader<S, S::kBM, TA> la{a, 0, p.lda, p.m, m0, vec_a};
  // B is (k, n): stored (k, n) is contiguous along n, stored (n, k) along k.
  const MatrixLoader<S, S::kBN, !TB> lb{b, 0, p.ldb, p.n, n0, vec_b};
  float acc[S::kTM][S::kTN];
  tile_gemm<S>(la, lb, 0, p.k, acc);
  tile_store<S>(acc, c, p.ldc, p.m, p.n, m0, n0, p.alpha, p.beta, vec_c, p.epi);
}

// Do 32-bit indices reach every element of A, B and C?
bool fits_tiles(const GemmParams& p) {
  return fits_int32(p.m) && fits_int32(p.n) && fits_int32(p.k) &&
         fits_int32(p.trans_a ? span(p.k, p.m, p.lda) : span(p.m, p.k, p.lda)) &&
         fits_int32(p.trans_b ? span(p.n, p.k, p.ldb) : span(p.k, p.n, p.ldb)) &&
         fits_int32(span(p.m, p.n, p.ldc));
}

// Every index variants 1 and 2 form: within an operand's span, plus a 32-element tile past the
// last row, column or k step (the bounds tests compare those before loading).
int64_t gemm_span(const GemmParams& p) {
  const int64_t sa = p.trans_a ? span(p.k, p.m, p.lda) : span(p.m, p.k, p.lda);
  const int64_t sb = p.trans_b ? span(p.n, p.k, p.ldb) : span(p.k, p.n, p.ldb);
  return std::max({sa, sb, span(p.m, p.n, p.ldc), p.m, p.n, p.k}) + 2 * kT2;
}

template <class S>
void launch_tile(const GemmParams& p, const float* a, const float* b, float* c) {
  CONVNET_CHECK(fits_tiles(p), "sgemm: m, n, k = " << p.m << ", " << p.n << ", " << p.k
                                   << ": an operand spans >= 2^31 elements, beyond the 32-bit "
                                      "indices of the tiled variants (variant 1 or 0 handles it)");
  const int64_t gx = (p.n + S::kBN - 1) / S::kBN, gy = (p.m + S::kBM - 1) / S::kBM;
  CONVNET_CHECK(gy <= 65535, "sgemm: m = " << p.m << " needs " << gy << " row tiles (max 65535)");
  const dim3 grid{unsigned(gx), unsigned(gy)};
  const bool va = quad_aligned(a, p.lda), vb = quad_aligned(b, p.ldb), vc = quad_aligned(c, p.ldc);
  const TileGemmDims d{int(p.m), int(p.n), int(p.k), int(p.lda), int(p.ldb), int(p.ldc),
                       p.alpha, p.beta, p.epi};
  cudaStream_t s = current_stream();
  if (!p.trans_a && !p.trans_b)
    CONVNET_LAUNCH((sgemm_tile_kernel<S, false, false>), grid, S::kThreads, 0, s, d, a, b, c, va, vb, vc);
  else if (!p.trans_a && p.trans_b)
    CONVNET_LAUNCH((sgemm_tile_kernel<S, false, true>), grid, S::kThreads, 0, s, d, a, b, c, va, vb, vc);
  else if (p.trans_a && !p.trans_b)
    CONVNET_LAUNCH((sgemm_tile_kernel<S, true, false>), grid, S::kThreads, 0, s, d, a, b, c, va, vb, vc);
  else
    CONVNET_LAUNCH((sgemm_tile_kernel<S, true, true>), grid, S::kThreads, 0, s, d, a, b, c, va, vb, vc);
}

using Tile128 = TileShape<128, 128, 8, 8, 8>;
using Tile64 = TileShape<64, 64, 16, 4, 4>;

// Variant 0's choice on device `dev`: the tile by whole waves, or the naive kernel past 32 bits.
TilePlan plan_sgemm(const GemmParams& p, int dev) {
  if (!fits_tiles(p)) {
    TilePlan naive;
    naive.variant = 1;
    return naive;
  }
  return plan_tile(p.m, p.n, 1, dev, 3, 4);
}

}  // namespace

std::string sgemm_plan_cuda(int64_t m, int64_t n, int64_t k, int dev) {
  GemmParams p;
  p.m = m, p.n = n, p.k = k, p.lda = k, p.ldb = n, p.ldc = n;
  const TilePlan plan = plan_sgemm(p, dev);
  return plan.variant == 1 ? "variant 1 (operands beyond 32-bit indices)"
                           : "variant " + std::to_string(plan.variant) + ": " + plan.describe();
}

int sgemm_variant_count_cuda() { return 5; }

void sgemm_cuda(const GemmParams& p, const float* a, const float* b, float* c) {
  if (p.m == 0 || p.n == 0) return;
  const int variant = p.variant == 0 ? plan_sgemm(p, current_device()).variant : p.variant;
  cudaStream_t s = current_stream();
  switch (variant) {
    case 1: {
      const dim3 block(32, 8);
      const int64_t gy = (p.m + 7) / 8;
      CONVNET_CHECK(gy <= 65535, "sgemm variant 1: m = " << p.m << " is too large (max 524280)");
      const dim3 grid(unsigned((p.n + 31) / 32), unsigned(gy));
      with_index(gemm_span(p), [&](auto index) {
        CONVNET_LAUNCH((sgemm_naive_kernel<decltype(index)>), grid, block, 0, s, p, a, b, c);
      });
      break;
    }
    case 2: {
      const int64_t gy = (p.m + kT2 - 1) / kT2;
      CONVNET_CHECK(gy <= 65535, "sgemm variant 2: m = " << p.m << " is too large");
      const dim3 grid(unsigned((p.n + kT2 - 1) / kT2), unsigned(gy));
      with_index(gemm_span(p), [&](auto index) {
        CONVNET_LAUNCH((sgemm_tiled32_kernel<decltype(index)>), grid, dim3(kT2, kT2), 0, s, p, a,
                       b, c);
      });
      break;
    }
    case 3:
      launch_tile<Tile128>(p, a, b, c);
      break;
    case 4:
      launch_tile<Tile64>(p, a, b, c);
      break;
    default:
      CONVNET_CHECK(false, "sgemm: variant " << p.variant << " does not exist (0..4)");
  }
}

}  // namespace convnet
