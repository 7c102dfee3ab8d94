// Fully-connected layers (declared in csrc/common/fc.h) as one SGEMM each (csrc/cuda/gemm.cu):
//   x (I, N), w (I, O), y (O, N), all row-major with the image index innermost.
//   fwd          y  (O, N) (+)= w^T x, + b per row, ReLU: sgemm m=O n=N k=I, A = w transposed,
//                                                     with the epilogue
//   bwd_data     dx (I, N) (+)= w dy                    sgemm m=I n=N k=O
//   bwd_weights  dw (I, O) (+)= x dy^T                  sgemm m=I n=O k=N, B = dy transposed
// FcParams::variant is passed on as the sgemm variant (0 = sgemm's choice, 1..4 its kernels).
#include "conv.h"
#include "cuda_check.h"
#include "fc.h"
#include "gemm.h"

namespace convnet {
namespace {

GemmParams gemm_for(const FcParams& p, const char* op, int64_t m, int64_t n, int64_t k,
                    bool trans_a, bool trans_b, int64_t lda, int64_t ldb, int64_t ldc,
                    bool accumulate) {
  CONVNET_CHECK(p.variant >= 0 && p.variant < sgemm_variant_count_cuda(),
                op << ": variant " << p.variant << " does not exist (0.."
                   << sgemm_variant_count_cuda() - 1 << ")");
  GemmParams g;
  g.m = m, g.n = n, g.k = k;
  g.trans_a = trans_a, g.trans_b = trans_b;
  g.lda = lda, g.ldb = ldb, g.ldc = ldc;
  g.alpha = 1.f, g.beta = accumulate ? 1.f : 0.f;
  g.variant = p.variant;
  return g;
}

}  // namespace

void fc_fwd_cuda(const FcParams& p, const float* x, const float* w, float* y, bool accumulate,
                 const Epilogue& epi) {
  const int64_t I = p.inputs, O = p.outputs, N = p.images;
  GemmParams g = gemm_for(p, "fc_fwd", O, N, I, true, false, O, N, N, accumulate);
  g.epi = epi;
  sgemm_cuda(g, w, x, y);
}

void fc_bwd_data_cuda(const FcParams& p, const float* dy, const float* w, float* dx,
                      bool accumulate) {
  const int64_t I = p.inputs, O = p.outputs, N = p.images;
  sgemm_cuda(gemm_for(p, "fc_bwd_data", I, N, O, false, false, O, N, N, accumulate), w, dy, dx);
}

void fc_bwd_weights_cuda(const FcParams& p, const float* x, const float* dy, float* dw,
                         bool accumulate) {
  const int64_t I = p.inputs, O = p.outputs, N = p.images;
  sgemm_cuda(gemm_for(p, "fc_bwd_weights", I, O, N, false, true, N, N, O, accumulate), x, dy, dw);
}

}  // namespace convnet
