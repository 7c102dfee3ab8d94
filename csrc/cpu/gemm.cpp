// sgemm_cpu: plain strided matrices through the blocked driver, variant chosen per call.
#include "gemm.h"

#include "check.h"
#include "gemm_cpu.h"
#include "isa.h"

namespace convnet {

static const char* variant_isa_name(int v) {
  return v >= 3 ? "avx512" : v == 2 ? "avx2" : "portable";
}

void check_gemm_variant(const char* op, int variant) {
  CONVNET_CHECK(variant >= 0 && variant < kGemmVariants,
                op << ": variant " << variant << " does not exist (the CPU backend has 0.."
                   << kGemmVariants - 1 << ")");
  Isa need = variant >= 3 ? Isa::avx512 : variant == 2 ? Isa::avx2 : Isa::portable;
  CONVNET_CHECK(need <= cpu_isa_supported(),
                op << ": variant " << variant << " (" << variant_isa_name(variant)
                   << ") is not supported by this CPU (best: "
                   << isa_name(cpu_isa_supported()) << ")");
}

// Measured at AlexNet's shapes: 6x64 runs the convolutions' forward and data-gradient GEMMs
// 1.2-1.4x faster (m = the filters or channels of one group, at most a few hundred), while
// 14x32 stays ahead by up to 1.15x on long-m GEMMs (convolution weight gradients: m = taps; FC
// forward and data gradient, large SGEMM), where its deeper k block (L2 / 2 KB: 512 steps on a
// 1 MB L2 or more) halves the traffic on C or better. With k within one 6x64 k block (FC weight
// gradients: k = 128 images) C is written once either way, and 6x64 measured 1.0-1.1x. 14x32
// also wins where 64-wide panels would pad much more (n = 96: 128 columns computed, 96 kept).
// "Few rows" is m within one 6x64 A block (kAvx512_6x64BlockRows = 384, the most filters per
// group AlexNet has): past it 6x64 takes a second, mostly empty m block per B block (512 = 384 +
// 128), and 448^3, 512^3 and 512 x 1024 x 512 ran 1.06x as fast on 14x32 (AMD Zen 4, AVX-512,
// one thread, thread CPU time). Square GEMMs at 256^3-384^3 also ran 1.04-1.05x faster on 14x32,
// but there the convolutions (packed filter panels, gathered images) measured 1.2-1.4x for 6x64,
// so they keep it. A read in place with k contiguous (few columns: the FC data gradient's w,
// rows 16 KB apart for fc6/fc7) also takes 6x64 whatever m: 6 rows' lines share an L1 set (12
// ways) where 14x32's 14 do not fit: at 128 images, both in place at KC 1024, 6x64 ran fc6 /
// fc7 1.12x as fast as 14x32, fc8 (rows 4000 bytes apart) level (AMD Zen 5, one thread by
// thread CPU time and two by wall time, alternating in one process, 9 pairs). The FC weight
// gradient (k = 128 images, x's rows k-contiguous) read in place skips a transposing pack that
// took 8% of fc8's (AMD Zen 5, AVX-512, two threads).
bool gemm_reads_rows_a_in_place(const GemmProblem& p, int64_t nr) {
  int64_t row_stride;
  return p.m > p.n && ((p.n + nr - 1) / nr <= kInPlaceMaxPanels || p.k <= kRowsAInPlaceMaxK) &&
         p.a->rows_k_contiguous(0, 0, &row_stride);
}

int gemm_avx512_shape_for(const GemmProblem& p) {
  auto padded = [&](int64_t mr, int64_t nr) {
    return double((p.m + mr - 1) / mr * mr) * double((p.n + nr - 1) / nr * nr);
  };
  const bool few_rows =
      p.m <= kAvx512_6x64BlockRows || p.k <= 128 || gemm_reads_rows_a_in_place(p, 64);
  return few_rows && padded(6, 64) <= 1.15 * padded(14, 32) ? 4 : 3;
}

static int resolved_variant(const GemmProblem& p, int variant) {
  if (variant != 0) return variant;
  Isa isa = cpu_isa();
  return isa == Isa::avx512 ? gemm_avx512_shape_for(p) : isa == Isa::avx2 ? 2 : 1;
}

int gemm_panel_rows(const GemmProblem& p, int variant) {
  switch (resolved_variant(p, variant)) {
    case 4: return 6;   // 6x64
    case 3: return 14;  // 14x32
    case 2: return 6;   // 6x16
    default: return 4;  // 4x16
  }
}

void gemm_run(const GemmProblem& p, int variant) {
  check_gemm_variant("sgemm", variant);
  variant = resolved_variant(p, variant);
  switch (variant) {
    case 4: return gemm_avx512_6x64(p);
    case 3: return gemm_avx512_14x32(p);
    case 2: return gemm_avx2(p);
    default: return gemm_portable(p);
  }
}

// A stored (m, k) (or (k, m) if trans_a) is the operand (rows = m, k); B stored (k, n) (or (n, k))
// is the operand (rows = n, k). A B stored (k, n) is gathered: each panel's first tile reads its
// k steps in place and packs them while it computes, where a copy pass over B, waiting on rows
// from L2 or L3, took 1.05% of a 1024^2 SGEMM's samples (perf; AMD Zen 5, AVX2, one thread).
// The same Zen 5, two threads, alternating in one process: AVX-512 1.017-1.025x as fast at
// 512^2-2048^2, AVX2 1.006-1.013x at 512^2-1024^2. The layers' own GEMMs keep their operands
// as they are: the FC forward's x gathered the same way ran fc6 / fc7 1.00 / 0.99x as fast, fc6
// at 64 images 1.01x (AMD Zen 5, AVX2, two threads, alternating in one process).
void sgemm_cpu(const GemmParams& p, const float* a, const float* b, float* c) {
  StridedOperand A = p.trans_a ? StridedOperand(a, 1, p.lda) : StridedOperand(a, p.lda, 1);
  StridedOperand B = p.trans_b ? StridedOperand(b, p.ldb, 1) : StridedOperand(b, 1, p.ldb, true);
  GemmProblem g;
  g.m = p.m, g.n = p.n, g.k = p.k;
  g.a = &A, g.b = &B, g.c = c, g.ldc = p.ldc;
  g.alpha = p.alpha, g.beta = p.beta, g.epi = p.epi;
  gemm_run(g, p.variant);
}

int sgemm_variant_count_cpu() { return kGemmVariants; }

}  // namespace convnet
