#include "registry.h"
#include "sgd.h"
#include "tensor_arg.h"

CONVNET_BINDINGS(sgd) {
  using namespace convnet;
  m.def("sgd_update", [](TensorArg w, TensorArg v, TensorArg grad, float lr, float momentum,
                         float weight_decay) {
    const char* op = "sgd_update";
    check_device(op, {{"w", w}, {"v", v}, {"grad", grad}});
    for (Arg t : {Arg{"w", w}, Arg{"v", v}, Arg{"grad", grad}}) {
      check_dtype(op, t, 'f');
      CONVNET_CHECK(t.t.shape == w.shape, op << ": " << t.name << " has shape "
                                             << shape_str(t.t.shape) << " but w has shape "
                                             << shape_str(w.shape));
    }
    check_writable(op, {"w", w});
    check_writable(op, {"v", v});
    CONVNET_CHECK(!w.numel() || (w.data != v.data && w.data != grad.data && v.data != grad.data),
                  op << ": w, v and grad must be three different buffers");
    SgdParams p;
    p.lr = lr;
    p.momentum = momentum;
    p.weight_decay = weight_decay;
    without_gil([&] {
      OP(sgd_update)(p, w.ptr<float>(), v.ptr<float>(), grad.ptr<float>(), w.numel());
    });
  }, py::arg("w"), py::arg("v"), py::arg("grad"), py::arg("lr"), py::arg("momentum"),
     py::arg("weight_decay"));
}
