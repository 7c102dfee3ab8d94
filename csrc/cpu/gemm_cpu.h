// The CPU SGEMM as the building block of the other CPU ops: a problem over packing operands
// (gemm_pack.h) run by one of the numbered micro-kernel variants.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <new>

#include <sys/mman.h>

#include "epilogue.h"
#include "gemm_pack.h"

namespace convnet {

// Grow-only 64-byte-aligned scratch: one per thread and purpose, so the hot path never allocates
// once the largest problem has been seen. With huge_pages, a buffer of 2 MB or more is 2 MB
// aligned and asked for transparent huge pages (the kernel's "madvise" mode leaves them off
// otherwise): the GEMM's packed blocks (the 14x32 tile's 4 MB B block, 1024 pages of 4 KB) then
// take a TLB entry per 2 MB, where each new B micro-panel's first tile walked 16 pages (the
// first tile of a panel took 1.16-1.50x a later tile's time with 4 KB pages, 1.10-1.16x with 2 MB;
// Zen 4, one thread, 2048^2-4096^2: AVX-512 SGEMM 1.02-1.05x; AVX2 2048^2 1.06x). Not measured
// on the Intel Xeon or Zen 3, which take the same page walks. Under THP "never" the advice is
// ignored.
struct AlignedScratch {
  static constexpr size_t kHugePage = size_t(2) << 20;  // x86-64's PMD page
  float* ptr = nullptr;
  size_t size = 0;
  bool huge_pages = false;
  AlignedScratch() = default;
  explicit AlignedScratch(bool huge) : huge_pages(huge) {}
  AlignedScratch(const AlignedScratch&) = delete;
  AlignedScratch& operator=(const AlignedScratch&) = delete;
  float* get(size_t n) {
    if (n > size) {
      std::free(ptr);
      const bool huge = huge_pages && n * sizeof(float) >= kHugePage;
      const size_t align = huge ? kHugePage : 64;
      const size_t bytes = (n * sizeof(float) + align - 1) / align * align;
      ptr = static_cast<float*>(std::aligned_alloc(align, bytes));
      if (!ptr) throw std::bad_alloc();
      if (huge) madvise(ptr, bytes, MADV_HUGEPAGE);  // advice only: may be refused
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
// The most B panels (of the kernel's NR columns) under which the blocked driver reads A in place
// rather than packing it, when A's layout allows (gemm_driver.h).
constexpr int64_t kInPlaceMaxPanels = 8;
// The deepest k at which those kernels read such an A in place whatever the columns (below).
constexpr int64_t kRowsAInPlaceMaxK = 128;
// Whether kernels that can (run_rows_a: the AVX-512 ones) read A in place with its k steps
// contiguous (GemmOperand::rows_k_contiguous: the FC data gradient's w, the FC weight gradient's
// x) for this problem, with panels of nr columns: more rows than columns, where the threads split
// the rows and each runs the whole problem's columns and k, so that the choice and the k blocks
// (and the bits) are the same on any number of threads; and few columns, or k within
// kRowsAInPlaceMaxK, where a tile row's A (6 rows x 128 floats, 3 KB) stays in L1 while its tiles
// run over every panel.
bool gemm_reads_rows_a_in_place(const GemmProblem& p, int64_t nr);
// The rows of the A panels (the micro-kernel's MR) that gemm_run(p, variant) packs or reads
// (GemmOperand::panels).
int gemm_panel_rows(const GemmProblem& p, int variant);
// The AVX-512 variant (3 or 4) that variant 0 runs for this problem.
int gemm_avx512_shape_for(const GemmProblem& p);

}  // namespace convnet
