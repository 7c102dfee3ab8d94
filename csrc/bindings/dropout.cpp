#include "dropout.h"
#include "registry.h"
#include "tensor_arg.h"

namespace convnet {
namespace {

DropoutParams dropout_params(const char* op, float keep, bool inverted) {
  CONVNET_CHECK(keep > 0.f && keep <= 1.f, op << ": keep must be in (0, 1], got " << keep);
  DropoutParams p;
  p.keep = keep;
  p.inverted = inverted;
  return p;
}

void check_mask(const char* op, const Arg& mask, const Arg& ref) {
  check_dtype(op, mask, 'B');
  CONVNET_CHECK(mask.t.numel() == ref.t.numel(), op << ": mask has shape "
                                                    << shape_str(mask.t.shape) << " but "
                                                    << ref.name << " has shape "
                                                    << shape_str(ref.t.shape));
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(dropout) {
  using namespace convnet;
  m.def("dropout_fwd", [](TensorArg x, TensorArg y, TensorArg mask, float keep, bool inverted,
                          uint64_t seed, uint32_t stream, uint32_t step) {
    const char* op = "dropout_fwd";
    check_device(op, {{"x", x}, {"y", y}, {"mask", mask}});
    check_dtype(op, {"x", x}, 'f');
    check_dtype(op, {"y", y}, 'f');
    check_writable(op, {"y", y});
    check_writable(op, {"mask", mask});
    CONVNET_CHECK(y.numel() == x.numel(), op << ": y has shape " << shape_str(y.shape)
                                             << " but x has shape " << shape_str(x.shape));
    check_mask(op, {"mask", mask}, {"x", x});
    DropoutParams p = dropout_params(op, keep, inverted);
    p.seed = seed;
    p.stream = stream;
    p.step = step;
    without_gil([&] {
      OP(dropout_fwd)(p, x.ptr<float>(), y.ptr<float>(), mask.ptr<uint8_t>(), x.numel());
    });
  }, py::arg("x"), py::arg("y"), py::arg("mask"), py::arg("keep"), py::arg("inverted"),
     py::arg("seed"), py::arg("stream"), py::arg("step"));
  m.def("dropout_bwd", [](TensorArg dy, TensorArg mask, TensorArg dx, float keep, bool inverted,
                          bool accumulate) {
    const char* op = "dropout_bwd";
    check_device(op, {{"dy", dy}, {"mask", mask}, {"dx", dx}});
    check_dtype(op, {"dy", dy}, 'f');
    check_dtype(op, {"dx", dx}, 'f');
    check_writable(op, {"dx", dx});
    CONVNET_CHECK(dx.numel() == dy.numel(), op << ": dx has shape " << shape_str(dx.shape)
                                               << " but dy has shape " << shape_str(dy.shape));
    check_mask(op, {"mask", mask}, {"dy", dy});
    DropoutParams p = dropout_params(op, keep, inverted);
    without_gil([&] {
      OP(dropout_bwd)(p, dy.ptr<float>(), mask.ptr<uint8_t>(), dx.ptr<float>(), dy.numel(),
          accumulate);
    });
  }, py::arg("dy"), py::arg("mask"), py::arg("dx"), py::arg("keep"), py::arg("inverted"),
     py::arg("accumulate"));
}
