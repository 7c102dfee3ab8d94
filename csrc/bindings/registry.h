// Each csrc/bindings/<family>.cpp registers its functions with CONVNET_BINDINGS(family) { ... },
// so adding an op family touches no shared file. The same binding sources are compiled into every
// backend module; OP(name) picks the backend's launcher (name##_cpu or name##_cuda).
#pragma once
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace convnet {
using BindFn = void (*)(pybind11::module_&);
int add_binding(const char* family, BindFn fn);
}  // namespace convnet

#define CONVNET_BINDINGS(family)                                                       \
  static void convnet_bind_##family(pybind11::module_& m);                             \
  static const int convnet_bind_reg_##family =                                         \
      ::convnet::add_binding(#family, &convnet_bind_##family);                         \
  static void convnet_bind_##family(pybind11::module_& m)

#if defined(CONVNET_BACKEND_CPU)
#define OP(name) name##_cpu
#else
#define OP(name) name##_cuda
#endif

// Runs a launcher without the GIL. Launchers see only raw pointers and params structs (checked
// and extracted while the GIL was held), so the worker threads of two logical CPU devices run
// their kernels at the same time, and the data loader's thread runs beside them.
template <class F>
auto without_gil(F&& launch) {
  py::gil_scoped_release nogil;
  return launch();
}
