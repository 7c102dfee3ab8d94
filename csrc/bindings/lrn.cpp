// Response normalisation bindings: lrn_* (cross-map, cuda-convnet's cmrnorm) and rnorm_* (same
// map). `alpha` is the coefficient of the window's sum of squares (convnet/ops/lrn.py converts
// cuda-convnet's scale and the paper's alpha into it).
#include <cfloat>
#include <cmath>
#include <string>

#include "lrn.h"
#include "registry.h"
#include "tensor_arg.h"

namespace convnet {
namespace {

// Checks one norm op's tensors and numbers; returns the params. `outputs` are written.
NormParams norm_params(const char* op, std::initializer_list<Arg> inputs,
                       std::initializer_list<Arg> outputs, int size, float alpha, float pow,
                       float min_div) {
  const Arg& x = *inputs.begin();
  check_ndim(op, x, 4);
  for (const Arg& a : inputs) {
    check_dtype(op, a, 'f');
    check_shape(op, a, x.t.shape);
  }
  for (const Arg& a : outputs) {
    check_dtype(op, a, 'f');
    check_shape(op, a, x.t.shape);
    check_writable(op, a);
    // Outputs are written while neighbouring channels/pixels of the inputs are still to be read.
    for (const Arg& b : inputs) {
      const char *a0 = a.t.ptr<char>(), *b0 = b.t.ptr<char>();
      const int64_t bytes = a.t.numel() * int64_t(sizeof(float));
      CONVNET_CHECK(bytes == 0 || a0 + bytes <= b0 || b0 + bytes <= a0,
                    op << ": output " << a.name << " overlaps input " << b.name
                       << " (in-place normalisation is not supported)");
    }
  }
  CONVNET_CHECK(size >= 1, op << ": size must be >= 1, got " << size);
  CONVNET_CHECK(std::isfinite(alpha) && alpha >= 0.f,
                op << ": alpha (scale) must be finite and >= 0, got " << alpha);
  CONVNET_CHECK(std::isfinite(pow), op << ": pow must be finite, got " << pow);
  CONVNET_CHECK(std::isfinite(min_div) && min_div >= FLT_MIN,
                op << ": min_div must be a positive normal float, got " << min_div);
  for (int i = 0; i < 4; ++i)
    CONVNET_CHECK(x.t.dim(i) < (int64_t(1) << 31),
                  op << ": " << x.name << " shape " << shape_str(x.t.shape) << " too large");
  NormParams p;
  p.channels = int(x.t.dim(0));
  p.height = int(x.t.dim(1));
  p.width = int(x.t.dim(2));
  p.images = int(x.t.dim(3));
  p.size = size;
  p.alpha = alpha;
  p.pow = pow;
  p.min_div = min_div;
  return p;
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(lrn) {
  using namespace convnet;
  m.def("lrn_fwd", [](TensorArg x, TensorArg y, TensorArg denoms, int size, float alpha,
                      float pow, float min_div) {
    check_device("lrn_fwd", {{"x", x}, {"y", y}, {"denoms", denoms}});
    NormParams p = norm_params("lrn_fwd", {{"x", x}}, {{"y", y}, {"denoms", denoms}}, size,
                               alpha, pow, min_div);
    without_gil([&] { OP(lrn_fwd)(p, x.ptr<float>(), y.ptr<float>(), denoms.ptr<float>()); });
  }, py::arg("x"), py::arg("y"), py::arg("denoms"), py::arg("size"), py::arg("alpha"),
     py::arg("pow"), py::arg("min_div"));
  // The backward reads min_div through denoms: 1 below only satisfies the params check.
  m.def("lrn_bwd", [](TensorArg dy, TensorArg x, TensorArg y, TensorArg denoms, TensorArg dx,
                      int size, float alpha, float pow, bool accumulate) {
    check_device("lrn_bwd", {{"dy", dy}, {"x", x}, {"y", y}, {"denoms", denoms}, {"dx", dx}});
    NormParams p = norm_params("lrn_bwd", {{"dy", dy}, {"x", x}, {"y", y}, {"denoms", denoms}},
                               {{"dx", dx}}, size, alpha, pow, 1.f);
    without_gil([&] {
      OP(lrn_bwd)(p, dy.ptr<float>(), x.ptr<float>(), y.ptr<float>(), denoms.ptr<float>(),
          dx.ptr<float>(), accumulate);
    });
  }, py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("denoms"), py::arg("dx"),
     py::arg("size"), py::arg("alpha"), py::arg("pow"), py::arg("accumulate"));
  m.def("rnorm_fwd", [](TensorArg x, TensorArg y, TensorArg denoms, int size, float alpha,
                        float pow, float min_div) {
    check_device("rnorm_fwd", {{"x", x}, {"y", y}, {"denoms", denoms}});
    NormParams p = norm_params("rnorm_fwd", {{"x", x}}, {{"y", y}, {"denoms", denoms}}, size,
                               alpha, pow, min_div);
    without_gil([&] { OP(rnorm_fwd)(p, x.ptr<float>(), y.ptr<float>(), denoms.ptr<float>()); });
  }, py::arg("x"), py::arg("y"), py::arg("denoms"), py::arg("size"), py::arg("alpha"),
     py::arg("pow"), py::arg("min_div"));
  m.def("rnorm_bwd", [](TensorArg dy, TensorArg x, TensorArg y, TensorArg denoms, TensorArg dx,
                        int size, float alpha, float pow, bool accumulate) {
    check_device("rnorm_bwd", {{"dy", dy}, {"x", x}, {"y", y}, {"denoms", denoms}, {"dx", dx}});
    NormParams p = norm_params("rnorm_bwd",
                               {{"dy", dy}, {"x", x}, {"y", y}, {"denoms", denoms}},
                               {{"dx", dx}}, size, alpha, pow, 1.f);
    without_gil([&] {
      OP(rnorm_bwd)(p, dy.ptr<float>(), x.ptr<float>(), y.ptr<float>(), denoms.ptr<float>(),
          dx.ptr<float>(), accumulate);
    });
  }, py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("denoms"), py::arg("dx"),
     py::arg("size"), py::arg("alpha"), py::arg("pow"), py::arg("accumulate"));
}
