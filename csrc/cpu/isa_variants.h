// One loop body, compiled for each SIMD path of isa.h and picked by cpu_isa() at run time (so
// CONVNET_CPU_ISA / convnet._cpu.set_isa force a lower path here too). Write the body as an
// always-inline function `name_body(args...)` using plain loops the compiler vectorises, then
//   CONVNET_ISA_VARIANTS(name, (const float* x, int64_t n), (x, n))
// defines name(...) which calls the AVX-512, AVX2 or portable instance of the body.
#pragma once
#include "isa.h"

#define CONVNET_BODY inline __attribute__((always_inline))

#define CONVNET_ISA_VARIANTS(name, params, args)                                              \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512"))) \
  void name##_avx512 params { name##_body args; }                                           \
  __attribute__((target("avx2,fma"))) void name##_avx2 params { name##_body args; }          \
  void name##_portable params { name##_body args; }                                         \
  void name params {                                                                        \
    switch (::convnet::cpu_isa()) {                                                         \
      case ::convnet::Isa::avx512: return name##_avx512 args;                               \
      case ::convnet::Isa::avx2: return name##_avx2 args;                                   \
      default: return name##_portable args;                                                 \
    }                                                                                       \
  }
