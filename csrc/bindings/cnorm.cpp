#include "cnorm.h"
#include "registry.h"
#include "tensor_arg.h"

CONVNET_BINDINGS(cnorm) {
  using namespace convnet;
  m.def("scale_by_denoms", [](TensorArg x, TensorArg denoms, TensorArg y, float pow) {
    const char* op = "scale_by_denoms";
    check_device(op, {{"x", x}, {"denoms", denoms}, {"y", y}});
    for (const Arg& a : {Arg{"x", x}, Arg{"denoms", denoms}, Arg{"y", y}}) check_dtype(op, a, 'f');
    check_writable(op, {"y", y});
    check_shape(op, {"denoms", denoms}, x.shape);
    check_shape(op, {"y", y}, x.shape);
    without_gil([&] {
      OP(scale_by_denoms)(x.ptr<float>(), denoms.ptr<float>(), y.ptr<float>(), x.numel(), pow);
    });
  }, py::arg("x"), py::arg("denoms"), py::arg("y"), py::arg("pow"));
}
