// CPU-backend controls: the SIMD path, the thread count, the convolution algorithm setting.
#if defined(CONVNET_BACKEND_CPU)
#include <omp.h>

#include <string>

#include "check.h"
#include "isa.h"
#include "registry.h"
#include "winograd.h"

CONVNET_BINDINGS(cpu) {
  using namespace convnet;
  m.def("isa", [] { return std::string(isa_name(cpu_isa())); },
        "The SIMD path in use: avx512, avx2 or portable");
  m.def("isa_supported", [] { return std::string(isa_name(cpu_isa_supported())); });
  m.def("set_isa", [](const std::string& name) {
    for (Isa i : {Isa::portable, Isa::avx2, Isa::avx512})
      if (name == isa_name(i)) return set_cpu_isa(i);
    CONVNET_CHECK(false, "set_isa: unknown path '" << name << "' (avx512, avx2, portable)");
  }, py::arg("name"));
  m.def("winograd_setting", [] { return std::string(winograd_setting("winograd_setting")); },
        "CONVNET_WINOGRAD as the convolutions read it: auto, on or off (ValueError otherwise)");
  m.def("num_threads", [] { return omp_get_max_threads(); });
  m.def("set_num_threads", [](int n) {
    CONVNET_CHECK(n >= 1, "set_num_threads: need n >= 1, got " << n);
    omp_set_num_threads(n);
  }, py::arg("n"));
}
#endif
