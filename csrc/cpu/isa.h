// Which SIMD path the CPU backend takes: chosen once by cpuid at import, so one binary runs on any
// x86-64. CONVNET_CPU_ISA=avx512|avx2|portable forces a path no higher than the CPU supports
// (tests use it to run every path on one machine).
#pragma once

namespace convnet {

enum class Isa { portable = 0, avx2 = 1, avx512 = 2 };

Isa cpu_isa();               // the path in use
Isa cpu_isa_supported();     // the best path this CPU can run
void set_cpu_isa(Isa isa);   // throws if the CPU cannot run it
const char* isa_name(Isa isa);

}  // namespace convnet

// A kernel family compiled once per SIMD path (lrn_kernels.h, pool_kernels.h) lists its entry
// points once, in a macro taking ENTRY: the family's header passes CONVNET_DECLARE_ENTRY to
// declare them, each <family>_<isa>.cpp passes CONVNET_DEFINE_ENTRY to define them as calls of
// the shared bodies compiled with that file's flags.
#define CONVNET_DECLARE_ENTRY(call) ;
#define CONVNET_DEFINE_ENTRY(call) { call; }
