// One loop body, compiled for each SIMD path of isa.h and picked by cpu_isa() at run time (so
// CONVNET_CPU_ISA / convnet._cpu.set_isa force a lower path here too). Write the body as an
// always-inline function `name_body(args...)` using plain loops the compiler vectorises, then
//   CONVNET_ISA_VARIANTS(name, (const float* x, int64_t n), (x, n))
// defines name(...) which calls the AVX-512, AVX2 or portable instance of the body.
// CONVNET_ISA_VARIANTS_T does the same for a body templated on one parameter, e.g.
//   CONVNET_ISA_VARIANTS_T(NeuronKind K, K, name, params, args)  ->  name<K>(...).
// Hand-written intrinsics go in functions marked CONVNET_TARGET_AVX512 / CONVNET_TARGET_AVX2.
#pragma once
#include "isa.h"

#define CONVNET_BODY inline __attribute__((always_inline))
#define CONVNET_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")))
#define CONVNET_TARGET_AVX2 __attribute__((target("avx2,fma")))

#define CONVNET_ISA_VARIANTS(name, params, args)                                              \
  CONVNET_TARGET_AVX512 void name##_avx512 params { name##_body args; }                      \
  CONVNET_TARGET_AVX2 void name##_avx2 params { name##_body args; }                          \
  void name##_portable params { name##_body args; }                                         \
  void name params {                                                                        \
    switch (::convnet::cpu_isa()) {                                                         \
      case ::convnet::Isa::avx512: return name##_avx512 args;                               \
      case ::convnet::Isa::avx2: return name##_avx2 args;                                   \
      default: return name##_portable args;                                                 \
    }                                                                                       \
  }

#define CONVNET_ISA_VARIANTS_T(tparam, targ, name, params, args)                              \
  template <tparam> CONVNET_TARGET_AVX512 void name##_avx512 params {                       \
    name##_body<targ> args;                                                                 \
  }                                                                                         \
  template <tparam> CONVNET_TARGET_AVX2 void name##_avx2 params { name##_body<targ> args; }  \
  template <tparam> void name##_portable params { name##_body<targ> args; }                 \
  template <tparam> void name params {                                                      \
    switch (::convnet::cpu_isa()) {                                                         \
      case ::convnet::Isa::avx512: return name##_avx512<targ> args;                         \
      case ::convnet::Isa::avx2: return name##_avx2<targ> args;                             \
      default: return name##_portable<targ> args;                                           \
    }                                                                                       \
  }
