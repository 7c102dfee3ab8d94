// The AVX2 SGEMM micro-kernel (6x16, gemm_avx2.cpp) on one thread, fed as the driver feeds it,
// step by step from the caches: its GFLOP/s by thread CPU time, as a fraction of the one-thread
// 256-bit FMA loop (fma_peak_avx2.cpp) timed just before it, so that each ratio pairs two
// timings taken under the same load; the median of 11 pairs and their range are printed.
// The kernel file is compiled into this program (its kernel lives in an anonymous namespace):
// gemm_tile_probe.sh builds it from any copy of gemm_avx2.cpp, so an old and a new kernel can
// run alternately. Modes (what stays where):
//   l1       one A panel (6 x kc), one B panel (kc x 16), one C tile: the loop's ceiling;
//   l2       the 56 A panels of a 336-row block (from L2) against one B panel;
//   bstream  as l2, over 128 B panels (a 2048-column block from L3);
//   block    as bstream, with a new C tile per call in a 336 x 2048 C (row stride 2048): the
//            driver's two inner loops at 2048 x 2048 for one k block.
//
//   sh benchmarks/gemm_tile_probe.sh [gemm_avx2.cpp] && OMP_NUM_THREADS=1 \
//       build/gemm_tile_probe/probe l1|l2|bstream|block [kc ...]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fma_peak.h"
#include KERNEL_SRC

namespace {

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// GFLOP/s of `calls` passes of the driver's two inner loops over the panels: for each of
// `bpanels` B panels (kc x 16, packed one after another), the `apanels` A panels (6 x kc, packed
// one after another) against it, the C tiles at c (row stride ldc; a new tile per A panel and
// B panel when ldc is not 16, else one tile throughout).
double kernel_gflops(int64_t kc, const float* a, int64_t apanels, const float* b,
                     int64_t bpanels, float* c, int64_t ldc, int64_t calls) {
  using K = convnet::Kernel6x16;
  const bool one_tile = ldc == K::NR;
  double t0 = thread_seconds();
  for (int64_t i = 0; i < calls; ++i)
    for (int64_t q = 0; q < bpanels; ++q)
      for (int64_t t = 0; t < apanels; ++t) {
        float* ct = one_tile ? c : c + t * K::MR * ldc + q * K::NR;
        K::run(kc, a + t * kc * K::MR, b + q * kc * K::NR, ct, ldc, 1.f, 1.f, K::MR, K::NR);
      }
  double t = thread_seconds() - t0;
  return 2.0 * K::MR * K::NR * kc * apanels * bpanels * calls / t * 1e-9;
}

double probe_gflops(int64_t iters) {
  double t0 = thread_seconds();
  double flops = convnet::fma_loop_avx2(iters);
  return flops / (thread_seconds() - t0) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  using K = convnet::Kernel6x16;
  const char* mode = argc > 1 ? argv[1] : "l1";
  std::vector<int64_t> kcs;
  for (int i = 2; i < argc; ++i) kcs.push_back(std::atoll(argv[i]));
  if (kcs.empty()) kcs = {64, 128, 256, 384, 512};
  const bool l1 = !std::strcmp(mode, "l1"), block = !std::strcmp(mode, "block");
  const bool bstream = !std::strcmp(mode, "bstream");
  if (!l1 && !block && !bstream && std::strcmp(mode, "l2")) {
    std::fprintf(stderr, "usage: %s [l1|l2|bstream|block] [kc ...]\n", argv[0]);
    return 2;
  }
  const int64_t apanels = l1 ? 1 : 56, bpanels = block || bstream ? 128 : 1;
  const int64_t ldc = block ? bpanels * K::NR : K::NR;
  const int pairs = 11;
  for (int64_t kc : kcs) {
    const int64_t na = apanels * kc * K::MR, nb = bpanels * kc * K::NR;
    const int64_t nc = block ? apanels * K::MR * ldc : K::MR * K::NR;
    float* a = static_cast<float*>(std::aligned_alloc(64, na * 4));
    float* b = static_cast<float*>(std::aligned_alloc(64, nb * 4));
    float* c = static_cast<float*>(std::aligned_alloc(64, nc * 4));
    for (int64_t i = 0; i < na; ++i) a[i] = 1e-3f * float(i % 7);
    for (int64_t i = 0; i < nb; ++i) b[i] = 1e-3f * float(i % 5);
    std::fill(c, c + nc, 0.f);
    // About 20 ms per timing at 100 GFLOP/s.
    const int64_t calls =
        std::max<int64_t>(1, int64_t(2e9 / (2.0 * K::MR * K::NR * kc * apanels * bpanels)));
    std::vector<double> ratio, gf;
    kernel_gflops(kc, a, apanels, b, bpanels, c, ldc, calls);  // warm up
    for (int p = 0; p < pairs; ++p) {
      double peak = probe_gflops(10'000'000);
      double g = kernel_gflops(kc, a, apanels, b, bpanels, c, ldc, calls);
      ratio.push_back(g / peak), gf.push_back(g);
    }
    std::sort(ratio.begin(), ratio.end()), std::sort(gf.begin(), gf.end());
    std::printf("%s kc %4lld: %6.1f GFLOP/s, %5.1f%% of the FMA probe [%5.1f-%5.1f]\n", mode,
                (long long)kc, gf[pairs / 2], 100 * ratio[pairs / 2], 100 * ratio.front(),
                100 * ratio.back());
    std::free(a), std::free(b), std::free(c);
  }
}
