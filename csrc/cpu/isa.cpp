#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "check.h"

namespace convnet {

static Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::portable;
}

static Isa parse(const char* s) {
  if (!std::strcmp(s, "avx512")) return Isa::avx512;
  if (!std::strcmp(s, "avx2")) return Isa::avx2;
  if (!std::strcmp(s, "portable")) return Isa::portable;
  CONVNET_FAIL("CONVNET_CPU_ISA=" << s << ": expected avx512, avx2 or portable");
}

static std::atomic<int>& current() {
  static std::atomic<int> isa{[] {
    Isa best = detect();
    const char* env = std::getenv("CONVNET_CPU_ISA");
    Isa want = env && *env ? parse(env) : best;
    return int(want < best ? want : best);
  }()};
  return isa;
}

Isa cpu_isa_supported() {
  static const Isa best = detect();
  return best;
}

Isa cpu_isa() { return Isa(current().load(std::memory_order_relaxed)); }

void set_cpu_isa(Isa isa) {
  CONVNET_CHECK(isa <= cpu_isa_supported(), "this CPU cannot run the " << isa_name(isa)
                                                << " path (best: " << isa_name(cpu_isa_supported())
                                                << ")");
  current().store(int(isa));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::portable: return "portable";
  }
  return "?";
}

}  // namespace convnet
