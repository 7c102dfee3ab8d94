// Host-only: initial weights are drawn on the host and copied to any device, so only the CPU
// module has this function.
#if defined(CONVNET_BACKEND_CPU)
#include "registry.h"
#include "tensor_arg.h"
#include "weight_init.h"

CONVNET_BINDINGS(weight_init) {
  using namespace convnet;
  m.def("gaussian_fill", [](TensorArg w, double std, uint64_t seed, uint32_t stream) {
    const char* op = "gaussian_init";
    check_device(op, {{"w", w}});
    check_dtype(op, {"w", w}, 'f');
    check_writable(op, {"w", w});
    CONVNET_CHECK(std >= 0.0, op << ": std must be >= 0, got " << std);
    py::gil_scoped_release nogil;
    gaussian_fill_host(w.ptr<float>(), w.numel(), std, seed, stream);
  }, py::arg("w"), py::arg("std"), py::arg("seed"), py::arg("stream"));
}
#endif
