// The register-blocked, double-buffered tile GEMM shared by sgemm (gemm.cu) and the implicit-GEMM
// convolutions (conv.cu). Only the loaders (where a tile's elements come from) and the epilogue
// (where results go) differ between them.
//
// A block of NT = (BM/TM) * (BN/TN) threads computes a BM x BN tile of
//   C (M x N) = A (M x K) * B (K x N)
// over a range of K, each thread holding TM x TN outputs in registers. K is walked in steps of BK;
// each step stages in shared memory
//   As[BK][BM]   A transposed: a thread's TM rows at one k are contiguous (float4 reads)
//   Bs[BK][BN]
// (rows padded by 4 floats: a loader writing down a column then hits 2 banks at most, not 16)
// in two buffers: while the block multiplies step t out of one, the loaders' registers already hold
// step t+1 from global memory, stored into the other buffer afterwards. One barrier per step.
//
// Occupancy: every tile kernel is declared __launch_bounds__(kThreads, kMinBlocks), so ptxas keeps
// it within 65536 / (kThreads * kMinBlocks) = 128 registers and two blocks share an SM (one's
// barrier wait hides behind the other's FMAs); tools/kernel_report.py --check holds that on sm_80
// and sm_90, and the launch plans below count waves of SMs x resident_tile_blocks blocks. On
// sm_100 and later, whose ptxas spills the 128x128 tiles at 128 registers, kMinBlocks is 1.
//
// Indices are 32-bit: the launchers check that every operand spans < 2^31 elements (variant 0
// falls back to the direct kernels beyond that).
//
// Output mapping: thread tid = ty * (BN/TN) + tx owns rows ty*TM + i (i < TM) and columns
// q*(BN/(TN/4)) + tx*4 + j (q < TN/4, j < 4). Column quads are spread so that the float4 reads of
// Bs by neighbouring tx land in distinct banks.
//
// Loader concept (A: tile As, X = M; B: tile Bs, X = N):
//   static constexpr int kRegs;                          floats one thread fetches per step
//   void fetch(int k0, int k_end, float* r)              global -> registers, zeros outside
//   void stash(const float* r, float* tile)              registers -> shared tile
//                                                        ([BK][pitch(BX)], element (k, x))
#pragma once
#include <atomic>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>

#include "cuda_check.h"
#include "epilogue.h"

namespace convnet {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1000
#define CONVNET_TILE_MIN_BLOCKS 1
#else
#define CONVNET_TILE_MIN_BLOCKS 2
#endif

template <int BM, int BN, int BK, int TM, int TN>
struct TileShape {
  static constexpr int kBM = BM, kBN = BN, kBK = BK, kTM = TM, kTN = TN;
  static constexpr int kMinBlocks = CONVNET_TILE_MIN_BLOCKS;  // resident blocks per SM
  static constexpr int kThreadsX = BN / TN;
  static constexpr int kThreads = (BM / TM) * (BN / TN);
  static constexpr int kQuads = TN / 4;           // column quads per thread
  static constexpr int kQuadStride = BN / kQuads;  // distance between a thread's quads
  static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are made of float4 quads");
  static_assert(BM % TM == 0 && BN % TN == 0, "tile must divide into thread tiles");
  static_assert((BM * BK) % (4 * kThreads) == 0 && (BN * BK) % (4 * kThreads) == 0,
                "every thread loads whole quads of both tiles");
  __device__ __forceinline__ static constexpr int pitch(int bx) { return bx + 4; }
  __device__ __forceinline__ static int row(int tid, int i) { return (tid / kThreadsX) * TM + i; }
  __device__ __forceinline__ static int col(int tid, int q, int j) {
    return q * kQuadStride + (tid % kThreadsX) * 4 + j;
  }
};

// A tile of a plain row-major matrix in global memory. The matrix as the GEMM sees it has extent X
// (rows of A, or columns of B) and K; in memory element (x, k) lives at
//   KMajor == false: p[x * ld + k]   (contiguous along k: quads along k, stored transposed)
//   KMajor == true:  p[k * ld + x]   (contiguous along x: quads along x, stored as they are)
// with p = base + off: the base stays a kernel parameter and the index is formed in 32 bits, so
// a load's address is one wide multiply-add. `vec` (p 16-byte aligned and ld % 4 == 0) allows
// float4 loads for quads wholly inside.
template <class S, int BX, bool KMajor>
struct MatrixLoader {
  static constexpr int BK = S::kBK;
  static constexpr int kQuads = BX * BK / (4 * S::kThreads);
  static constexpr int kRegs = 4 * kQuads;
  const float* base;
  int off, ld, X, x0;
  bool vec;

  // Quad g of this thread: its (x, k) offsets inside the tile.
  __device__ __forceinline__ static void quad(int g, int& x, int& k) {
    const int id = int(threadIdx.x) + g * S::kThreads;
    if (KMajor) {
      k = id / (BX / 4);
      x = (id % (BX / 4)) * 4;
    } else {
      x = id / (BK / 4);
      k = (id % (BK / 4)) * 4;
    }
  }

  __device__ __forceinline__ void fetch(int k0, int k_end, float* r) const {
#pragma unroll
    for (int g = 0; g < kQuads; ++g) {
      int xl, kl;
      quad(g, xl, kl);
      const int x = x0 + xl, k = k0 + kl;
      // The quad runs along k (KMajor == false) or along x (KMajor == true).
      const int outer = KMajor ? k : x, inner = KMajor ? x : k;
      const int outer_n = KMajor ? k_end : X, inner_n = KMajor ? X : k_end;
      const float* q = base + (off + outer * ld + inner);
      const int have = outer < outer_n ? inner_n - inner : 0;  // elements of the quad inside
      if (vec && have >= 4) {
        const float4 v = *reinterpret_cast<const float4*>(q);
        r[4 * g] = v.x;
        r[4 * g + 1] = v.y;
        r[4 * g + 2] = v.z;
        r[4 * g + 3] = v.w;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) r[4 * g + j] = j < have ? q[j] : 0.f;
      }
    }
  }

  __device__ __forceinline__ void stash(const float* r, float* tile) const {
#pragma unroll
    for (int g = 0; g < kQuads; ++g) {
      int xl, kl;
      quad(g, xl, kl);
      if (KMajor) {
        *reinterpret_cast<float4*>(tile + kl * S::pitch(BX) + xl) =
            make_float4(r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) tile[(kl + j) * S::pitch(BX) + xl] = r[4 * g + j];
      }
    }
  }
};

// acc (+)= A[m0.., k_begin..k_end) * B[k_begin..k_end), ..n0] for this thread's outputs.
template <class S, class LoadA, class LoadB>
__device__ __forceinline__ void tile_gemm(const LoadA& la, const LoadB& lb, int k_begin,
                                          int k_end, float (&acc)[S::kTM][S::kTN]) {
  constexpr int BM = S::kBM, BN = S::kBN, BK = S::kBK, TM = S::kTM, TN = S::kTN;
  // float4 arrays: 16-byte aligned for the vector reads and writes, under nvcc and emulation.
  constexpr int PA = S::pitch(BM), PB = S::pitch(BN);
  __shared__ float4 as4[2][BK * PA / 4];
  __shared__ float4 bs4[2][BK * PB / 4];
  const int tid = threadIdx.x;
  const int row0 = S::row(tid, 0);
  float ra[LoadA::kRegs], rb[LoadB::kRegs];

#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  la.fetch(k_begin, k_end, ra);
  lb.fetch(k_begin, k_end, rb);
  la.stash(ra, reinterpret_cast<float*>(as4[0]));
  lb.stash(rb, reinterpret_cast<float*>(bs4[0]));
  __syncthreads();

  int buf = 0;
  for (int k0 = k_begin; k0 < k_end; k0 += BK) {
    const bool more = k0 + BK < k_end;
    if (more) {
      la.fetch(k0 + BK, k_end, ra);
      lb.fetch(k0 + BK, k_end, rb);
    }
    const float* as = reinterpret_cast<const float*>(as4[buf]);
    const float* bs = reinterpret_cast<const float*>(bs4[buf]);
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; i += 4) {
        const float4 v = *reinterpret_cast<const float4*>(as + kk * PA + row0 + i);
        a[i] = v.x;
        a[i + 1] = v.y;
        a[i + 2] = v.z;
        a[i + 3] = v.w;
      }
#pragma unroll
      for (int q = 0; q < S::kQuads; ++q) {
        const float4 v = *reinterpret_cast<const float4*>(bs + kk * PB + S::col(tid, q, 0));
        b[4 * q] = v.x;
        b[4 * q + 1] = v.y;
        b[4 * q + 2] = v.z;
        b[4 * q + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (more) {
      la.stash(ra, reinterpret_cast<float*>(as4[buf ^ 1]));
      lb.stash(rb, reinterpret_cast<float*>(bs4[buf ^ 1]));
    }
    __syncthreads();
    buf ^= 1;
  }
}

// Writes this thread's outputs to rows [m0, M) x columns [n0, N) of a row-major matrix
// c (ld = ldc): c = epi(alpha * acc + beta * c) (epilogue.h: bias of row m, ReLU), and c is not
// read when beta == 0. `vec`: c 16-byte aligned and ldc % 4 == 0, so whole quads are written as
// float4.
template <class S>
__device__ __forceinline__ void tile_store(const float (&acc)[S::kTM][S::kTN], float* c,
                                           int ldc, int M, int N, int m0, int n0, float alpha,
                                           float beta, bool vec,
                                           const Epilogue& epi = Epilogue{}) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < S::kTM; ++i) {
    const int m = m0 + S::row(tid, i);
    if (m >= M) continue;
    float* crow = c + m * ldc;
#pragma unroll
    for (int q = 0; q < S::kQuads; ++q) {
      const int n = n0 + S::col(tid, q, 0);
      if (vec && n + 3 < N) {
        float4 v = make_float4(alpha * acc[i][4 * q], alpha * acc[i][4 * q + 1],
                               alpha * acc[i][4 * q + 2], alpha * acc[i][4 * q + 3]);
        if (beta != 0.f) {
          const float4 old = *reinterpret_cast<const float4*>(crow + n);
          v.x = fmaf(beta, old.x, v.x);
          v.y = fmaf(beta, old.y, v.y);
          v.z = fmaf(beta, old.z, v.z);
          v.w = fmaf(beta, old.w, v.w);
        }
        v = make_float4(epi.apply(v.x, m), epi.apply(v.y, m), epi.apply(v.z, m),
                        epi.apply(v.w, m));
        *reinterpret_cast<float4*>(crow + n) = v;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (n + j >= N) break;
          const float v = alpha * acc[i][4 * q + j];
          crow[n + j] = epi.apply(beta == 0.f ? v : fmaf(beta, crow[n + j], v), m);
        }
      }
    }
  }
}

// Host side: may a float4 touch p + k*ld (k any)? Base aligned and every row start aligned.
inline bool quad_aligned(const void* p, int64_t ld) {
  return (reinterpret_cast<uintptr_t>(p) % 16 == 0) && ld % 4 == 0;
}

// Host side: do 32-bit indices reach every element of an operand of `elements` floats?
inline bool fits_int32(int64_t elements) {
  return elements <= int64_t(std::numeric_limits<int>::max());
}
// Elements a row-major (rows x cols) matrix with row stride ld spans.
inline int64_t span(int64_t rows, int64_t cols, int64_t ld) {
  return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
}

// ---- Launch plans from the device's SM count (host side).

// Blocks of a tile kernel resident per SM on device `dev` (TileShape::kMinBlocks of its arch)
// times its SMs: one wave. cudaGetDeviceProperties once per device; under emulation, its workers.
inline int wave_of(int dev, int* sms = nullptr) {
  static std::atomic<int> cache[64];  // SMs << 8 | resident blocks
  if (dev < 0 || dev >= 64) return 1;
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    cudaDeviceProp prop;
    CONVNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, physical_device(dev)));
    const int n = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    v = n << 8 | (prop.major >= 10 ? 1 : 2);
    cache[dev].store(v, std::memory_order_relaxed);
  }
  if (sms) *sms = v >> 8;
  return (v >> 8) * (v & 0xff);
}

// A tile kernel's launch: which tile (the variant number), how many blocks, the reduction split
// (bwd weights only) and the waves that makes on the device.
struct TilePlan {
  int variant = 0;            // 3: 128x128 tile, 2 or 4: 64x64 (the op's own numbering)
  int tile = 0;               // 128 or 64
  int64_t blocks = 0;         // tiles x splits
  int64_t splits = 1, chunk = 0;
  int sms = 0, wave = 0;      // wave = sms x resident blocks per SM
  const char* why = nullptr;  // variant 1 (direct) only: why no tile
  int64_t waves() const { return (blocks + wave - 1) / wave; }
  std::string describe() const {
    std::ostringstream o;
    o << tile << "x" << tile << " tile, " << blocks / splits << " tiles";
    if (splits > 1) o << " x " << splits << " k-splits of " << chunk;
    o << " = " << blocks << " blocks, " << waves() << " wave(s) of " << wave << " (" << sms
      << " SMs x " << wave / sms << ")";
    return o.str();
  }
};

// What one thread's FMA costs in the 64x64 tile (4x4 per thread) against the 128x128 one (8x8):
// per FMA it reads shared memory twice as often. On an H200 at full waves the 128x128 tile ran
// SGEMM 4096^2 at 1.29x the 64x64's rate (41,571-41,641 against 32,205-32,210 GFLOP/s, two runs);
// costed as equal, variant 0 had planned the 64x64 tile for conv1's and conv2's forward and
// conv2's, conv3's and conv5's weight gradients, which the 128x128 ran 1.18-1.36x as fast. 1.25
// picks the faster tile for each of the 14 tiled AlexNet conv passes of that run (a test).
constexpr double kTile64FmaCost = 1.25;

// Estimated time of a launch in arbitrary units: its whole waves times one thread's FMAs per
// wave (TM x TN per k, `k_per_block` k: both tiles run 256 threads), each FMA weighted by its
// tile's cost (kTile64FmaCost). A partly filled last wave costs a whole one; so do the idle SMs
// of a small grid.
inline double plan_cost(int64_t blocks, int wave, int tile, int64_t k_per_block) {
  const double fma_cost = tile == 64 ? kTile64FmaCost : 1.0;
  return double((blocks + wave - 1) / wave) * (tile * tile / 256) * fma_cost *
         double(k_per_block);
}

// Tile of a GEMM-shaped launch (rows x cols per group, `groups` of them), between the 128x128
// tile (8x8 per thread) and the 64x64 one (4x4): the cheaper by plan_cost; ties go to 128x128.
inline TilePlan plan_tile(int64_t rows, int64_t cols, int64_t groups, int dev, int variant128,
                          int variant64) {
  TilePlan p;
  p.wave = wave_of(dev, &p.sms);
  const int64_t b128 = ((rows + 127) / 128) * ((cols + 127) / 128) * groups;
  const int64_t b64 = ((rows + 63) / 64) * ((cols + 63) / 64) * groups;
  const bool big = plan_cost(b128, p.wave, 128, 1) <= plan_cost(b64, p.wave, 64, 1);
  p.variant = big ? variant128 : variant64;
  p.tile = big ? 128 : 64;
  p.blocks = big ? b128 : b64;
  return p;
}

}  // namespace convnet
