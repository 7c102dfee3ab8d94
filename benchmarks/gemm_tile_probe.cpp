// An SGEMM micro-kernel on one thread, fed as the driver feeds it, step by step from the caches:
// its GFLOP/s by thread CPU time, as a fraction of the one-thread FMA loop of its width
// (fma_peak_avx2.cpp / fma_peak_avx512.cpp) timed just before it, so that each ratio pairs two
// timings taken under the same load; the median of 11 pairs and their range are printed.
// The kernel file is compiled into this program (its kernels live in an anonymous namespace):
// gemm_tile_probe.sh builds it from any copy of gemm_avx2.cpp (the 6x16 kernel) or, with
// --avx512, of gemm_avx512.cpp (the 14x32 kernel, variant 3), so an old and a new kernel can run
// alternately. The block (A rows x B columns) is 336 x 2048 for 6x16 (its MC and NC when this
// probe was written) and the machine's MC x NC for 14x32 (its blocking(): 252 x 2048 at KC 512 on
// a 1 MB L2). Modes (what stays where):
//   l1       one A panel (MR x kc), one B panel (kc x NR), one C tile: the loop's ceiling;
//   l2       the A panels of one block (from L2) against one B panel;
//   bstream  as l2, over the block's B panels (from L3);
//   block    as bstream, with a new C tile per call in a block-sized C (row stride = its
//            columns): the driver's two inner loops for one k block when C stays in the caches;
//   slab     as block, each pass over the next block of rows of a 4096 x 4096 C (the block's
//            columns of it: the m x NC slab a k block sweeps at 4096^2, 32 MB for 14x32), so
//            that C comes from memory as there.
//
//   sh benchmarks/gemm_tile_probe.sh [--avx512] [gemm_avx2.cpp | gemm_avx512.cpp] && \
//       OMP_NUM_THREADS=1 build/gemm_tile_probe/probe l1|l2|bstream|block|slab [kc ...]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fma_peak.h"
#include KERNEL_SRC

namespace {

#ifdef PROBE_AVX512
using K = convnet::Kernel14x32;
double fma_loop(int64_t iters) { return convnet::fma_loop_avx512(iters); }
#else
using K = convnet::Kernel6x16;
double fma_loop(int64_t iters) { return convnet::fma_loop_avx2(iters); }
#endif

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// GFLOP/s of `calls` passes of the driver's two inner loops over the panels: for each of
// `bpanels` B panels (kc x NR, packed one after another), the `apanels` A panels (MR x kc, packed
// one after another) against it, the C tiles at c (row stride ldc; a new tile per A panel and
// B panel when ldc is not NR, else one tile throughout). With bands > 1 each pass writes the next
// band of apanels * MR rows of a taller C, cycling through them from call to call.
double kernel_gflops(int64_t kc, const float* a, int64_t apanels, const float* b,
                     int64_t bpanels, float* c, int64_t ldc, int64_t bands, int64_t calls) {
  static int64_t band = 0;
  const bool one_tile = ldc == K::NR;
  double t0 = thread_seconds();
  for (int64_t i = 0; i < calls; ++i, band = (band + 1) % bands)
    for (int64_t q = 0; q < bpanels; ++q)
      for (int64_t t = 0; t < apanels; ++t) {
        float* ct = one_tile ? c : c + (band * apanels + t) * K::MR * ldc + q * K::NR;
        K::run(kc, a + t * kc * K::MR, b + q * kc * K::NR, ct, ldc, 1.f, 1.f, K::MR, K::NR);
      }
  double t = thread_seconds() - t0;
  return 2.0 * K::MR * K::NR * kc * apanels * bpanels * calls / t * 1e-9;
}

double probe_gflops(int64_t iters) {
  double t0 = thread_seconds();
  double flops = fma_loop(iters);
  return flops / (thread_seconds() - t0) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "l1";
  std::vector<int64_t> kcs;
  for (int i = 2; i < argc; ++i) kcs.push_back(std::atoll(argv[i]));
  if (kcs.empty()) kcs = {64, 128, 256, 384, 512};
  const bool l1 = !std::strcmp(mode, "l1"), block = !std::strcmp(mode, "block");
  const bool bstream = !std::strcmp(mode, "bstream"), slab = !std::strcmp(mode, "slab");
  if (!l1 && !block && !bstream && !slab && std::strcmp(mode, "l2")) {
    std::fprintf(stderr, "usage: %s [l1|l2|bstream|block|slab] [kc ...]\n", argv[0]);
    return 2;
  }
#ifdef PROBE_AVX512
  const convnet::gemm_detail::Blocking blk = K::blocking();
  const int64_t block_panels = blk.mc / K::MR, block_cols = blk.nc / K::NR;
#else
  const int64_t block_panels = 56, block_cols = 128;
#endif
  const int64_t apanels = l1 ? 1 : block_panels;
  const int64_t bpanels = block || bstream || slab ? block_cols : 1;
  const int64_t ldc = slab ? 4096 : block ? bpanels * K::NR : K::NR;
  const int64_t bands = slab ? 4096 / (apanels * K::MR) : 1;
  std::printf("%dx%d kernel, %lld A panels, %lld B panels\n", K::MR, K::NR,
              (long long)apanels, (long long)bpanels);
  const int pairs = 11;
  for (int64_t kc : kcs) {
    const int64_t na = apanels * kc * K::MR, nb = bpanels * kc * K::NR;
    const int64_t nc = block || slab ? bands * apanels * K::MR * ldc : K::MR * K::NR;
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
    kernel_gflops(kc, a, apanels, b, bpanels, c, ldc, bands, calls);  // warm up
    for (int p = 0; p < pairs; ++p) {
      double peak = probe_gflops(10'000'000);
      double g = kernel_gflops(kc, a, apanels, b, bpanels, c, ldc, bands, calls);
      ratio.push_back(g / peak), gf.push_back(g);
    }
    std::sort(ratio.begin(), ratio.end()), std::sort(gf.begin(), gf.end());
    std::printf("%s kc %4lld: %6.1f GFLOP/s, %5.1f%% of the FMA probe [%5.1f-%5.1f]\n", mode,
                (long long)kc, gf[pairs / 2], 100 * ratio[pairs / 2], 100 * ratio.front(),
                100 * ratio.back());
    std::free(a), std::free(b), std::free(c);
  }
}
