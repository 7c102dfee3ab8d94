// SGEMM, the building block of convolution and fully-connected layers.
//   C = alpha * op(A) * op(B) + beta * C
// Row-major: op(A) is (m, k), op(B) is (k, n), C is (m, n); lda/ldb/ldc are row strides of A, B, C
// as stored (A stored (m, k) or, if trans_a, (k, m)). beta == 0 never reads C.
#pragma once
#include "epilogue.h"
#include "op.h"

namespace convnet {

struct GemmParams {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  float alpha = 1.f, beta = 0.f;
  Epilogue epi;     // bias per row of C and ReLU, applied last (the fc forward's)
  int variant = 0;  // 0 = the default kernel; 1 .. sgemm_variant_count()-1 select numbered variants
};

CONVNET_OP(void, sgemm, (const GemmParams& p, const float* a, const float* b, float* c))
// How many numbered variants sgemm has on this backend (valid: 0 .. count-1; tests run them all).
// A variant the machine cannot run (e.g. an AVX-512 kernel on an AVX2 CPU) throws ArgError
// mentioning "not supported by this CPU".
CONVNET_OP(int, sgemm_variant_count, ())

}  // namespace convnet
