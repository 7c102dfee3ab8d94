#include "elementwise.h"
#include "registry.h"
#include "tensor_arg.h"

CONVNET_BINDINGS(elementwise) {
  using namespace convnet;
  m.def("fill", [](TensorArg y, float value) {
    check_device("fill", {{"y", y}});
    check_dtype("fill", {"y", y}, 'f');
    check_writable("fill", {"y", y});
    without_gil([&] { OP(fill)(y.ptr<float>(), y.numel(), value); });
  }, py::arg("y"), py::arg("value"));
  m.def("axpby", [](TensorArg y, TensorArg x, float alpha, float beta) {
    check_device("axpby", {{"y", y}, {"x", x}});
    check_dtype("axpby", {"y", y}, 'f');
    check_dtype("axpby", {"x", x}, 'f');
    check_writable("axpby", {"y", y});
    CONVNET_CHECK(x.numel() == y.numel(), "axpby: x has shape " << shape_str(x.shape)
                                              << " but y has shape " << shape_str(y.shape));
    without_gil([&] { OP(axpby)(y.ptr<float>(), x.ptr<float>(), y.numel(), alpha, beta); });
  }, py::arg("y"), py::arg("x"), py::arg("alpha"), py::arg("beta"));
}
