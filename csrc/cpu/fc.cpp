// Fully-connected layers on the CPU: one SGEMM each (FcParams::variant selects its micro-kernel).
//   forward       y (O, N)  = w^T (O, I) x (I, N), then the epilogue (bias, ReLU)
//   data grad.    dx (I, N) = w (I, O) dy (O, N); variant kFcDotVariant (and variant 0 up to
//                 fc_dot_max_images() images): inner products along o, no pack of w (fc_dot.h)
//   weight grad.  dw (I, O) = x (I, N) dy^T (N, O)
#include "fc.h"

#include "fc_dot.h"
#include "gemm_cpu.h"

namespace convnet {

static void run(const char* op, int variant, int64_t m, int64_t n, int64_t k,
                const GemmOperand& a, const GemmOperand& b, float* c, bool accumulate,
                const Epilogue& epi = Epilogue{}) {
  check_gemm_variant(op, variant);
  GemmProblem gp;
  gp.m = m, gp.n = n, gp.k = k;
  gp.a = &a, gp.b = &b, gp.c = c, gp.ldc = n;
  gp.beta = accumulate ? 1.f : 0.f;
  gp.epi = epi;
  gemm_run(gp, variant);
}

void fc_fwd_cpu(const FcParams& p, const float* x, const float* w, float* y, bool accumulate,
                const Epilogue& epi) {
  StridedOperand wt(w, 1, p.outputs);  // rows = o, k = i
  StridedOperand xs(x, 1, p.images);   // rows = n, k = i
  run("fc_fwd", p.variant, p.outputs, p.images, p.inputs, wt, xs, y, accumulate, epi);
}

void fc_bwd_data_cpu(const FcParams& p, const float* dy, const float* w, float* dx,
                     bool accumulate) {
  if (p.variant == kFcDotVariant || (p.variant == 0 && p.images <= fc_dot_max_images()))
    return fc_bwd_data_dot(p, dy, w, dx, accumulate);
  StridedOperand ws(w, p.outputs, 1);   // rows = i, k = o
  StridedOperand dys(dy, 1, p.images);  // rows = n, k = o
  run("fc_bwd_data", p.variant, p.inputs, p.images, p.outputs, ws, dys, dx, accumulate);
}

void fc_bwd_weights_cpu(const FcParams& p, const float* x, const float* dy, float* dw,
                        bool accumulate) {
  StridedOperand xs(x, p.images, 1);    // rows = i, k = n
  StridedOperand dys(dy, p.images, 1);  // rows = o, k = n
  run("fc_bwd_weights", p.variant, p.inputs, p.outputs, p.images, xs, dys, dw, accumulate);
}

}  // namespace convnet
