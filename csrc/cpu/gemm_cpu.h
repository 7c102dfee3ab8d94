// The CPU SGEMM as the building block of the other CPU ops: a problem over packing operands
// (gemm_pack.h) run by one of the numbered micro-kernel variants.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <new>

#include "epilogue.h"
#include "gemm_pack.h"

namespace convnet {

// Grow-only 64-byte-aligned scratch: one per thread and purpose, so the hot path never allocates
// once the largest problem has been seen.
struct AlignedScratch {
  float* ptr = nullptr;
  size_t size = 0;
  float* get(size_t n) {
    if (n > size) {
      std::free(ptr);
      ptr = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
      if (!ptr) throw std::bad_alloc();
      size = n;
    }
    return ptr;
  }
  ~AlignedScratch() { std::free(ptr); }
};

// C (m, n) = alpha * A (m, k) * B (k, n) + beta * C; a is viewed as (m, k), b as (n, k). Then
// the epilogue (bias per row, ReLU) on each tile of C once it holds its final sum.
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  const GemmOperand* a = nullptr;
  const GemmOperand* b = nullptr;
  float* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1.f, beta = 0.f;
  Epilogue epi;
  // At most this many columns per block of C (0: the kernel's NC). The implicit-GEMM
  // convolutions set it: their m fits one block of A, so a wide block of B buys no reuse, while
  // the C block revisited at every k block and the image rows its panels gather must stay in L2.
  int64_t max_nc = 0;
};

// Variants (GemmParams::variant, ConvParams::variant and FcParams::variant on the CPU):
//   0  the best path this process uses (cpu_isa(): cpuid, lowered by CONVNET_CPU_ISA/set_isa)
//   1  portable: 4x16 register tile in plain C++, compiled for baseline x86-64
//   2  AVX2+FMA: 6x16 tile, broadcast-FMA on 256-bit registers
//   3  AVX-512: 14x32 tile, broadcast-FMA on 512-bit registers (28 accumulators)
//   4  AVX-512: 6x64 tile (24 accumulators, fewer loads per FMA)
// On AVX-512, variant 0 picks 3 or 4 per problem (gemm_avx512_shape_for). A variant selects the
// micro-kernel; the packing copies are vectorised for the CPU at hand whatever the variant
// (target_clones), the in-register transposes follow cpu_isa().
constexpr int kGemmVariants = 5;
// Throws ArgError (naming `op`) for an unknown variant or one this CPU cannot run.
void check_gemm_variant(const char* op, int variant);
void gemm_run(const GemmProblem& p, int variant);

void gemm_portable(const GemmProblem& p);
void gemm_avx2(const GemmProblem& p);
void gemm_avx512_14x32(const GemmProblem& p);
void gemm_avx512_6x64(const GemmProblem& p);
// The 6x64 kernel's m block (MC): rows of A it packs per block.
constexpr int64_t kAvx512_6x64BlockRows = 6 * 64;
// The rows of the A panels (the micro-kernel's MR) that gemm_run(p, variant) packs or reads
// (GemmOperand::panels).
int gemm_panel_rows(const GemmProblem& p, int variant);
// The AVX-512 variant (3 or 4) that variant 0 runs for this problem.
int gemm_avx512_shape_for(const GemmProblem& p);

}  // namespace convnet
