#include "check.h"
#include "registry.h"
#include "relu_bias.h"
#include "tensor_arg.h"

CONVNET_BINDINGS(relu_bias) {
  using namespace convnet;
  // dy (F, ...) masked in place by y > 0; db (F) (+)= the masked dy summed over the rest.
  m.def("relu_bias_bwd", [](TensorArg dy, TensorArg y, TensorArg db, bool accumulate) {
    const char* op = "relu_bias_bwd";
    check_device(op, {{"dy", dy}, {"y", y}, {"db", db}});
    for (Arg t : {Arg{"dy", dy}, Arg{"y", y}, Arg{"db", db}}) check_dtype(op, t, 'f');
    check_writable(op, {"dy", dy});
    check_writable(op, {"db", db});
    CONVNET_CHECK(dy.ndim() >= 1, op << ": dy must have a leading filter dimension, got shape "
                                     << shape_str(dy.shape));
    check_shape(op, {"y", y}, dy.shape);
    check_shape(op, {"db", db}, {dy.dim(0)});
    int64_t f = dy.dim(0);
    without_gil([&] {
      OP(relu_bias_bwd)(dy.ptr<float>(), y.ptr<float>(), db.ptr<float>(), f,
                        f ? dy.numel() / f : 0, accumulate);
    });
  }, py::arg("dy"), py::arg("y"), py::arg("db"), py::arg("accumulate"));
}
