#include <pybind11/stl.h>

#include <string>

#include "conv_geometry.h"
#include "local.h"
#include "registry.h"
#include "tensor_arg.h"

namespace convnet {
namespace {

// The geometry of a locally-connected layer: x (C, H, W, N) and w (Ho, Wo, C/groups, fs, fs, F)
// checked as a convolution's, then w's leading (Ho, Wo) against the output size.
ConvParams local_params(const char* op, const char* xname, const std::vector<int64_t>& x,
                        const char* wname, const std::vector<int64_t>& w, int padding, int stride,
                        int groups, int variant) {
  CONVNET_CHECK(x.size() == 4, op << ": " << xname << " must be (C, H, W, N), got shape "
                                  << shape_str(x));
  CONVNET_CHECK(w.size() == 6, op << ": " << wname << " must be (Ho, Wo, C/groups, fs, fs, F), "
                                  << "got shape " << shape_str(w));
  ConvParams p = conv_params(op, xname, x, wname, {w[2], w[3], w[4], w[5]}, padding, stride,
                             groups, variant);
  CONVNET_CHECK(w[0] == p.out_h && w[1] == p.out_w,
                op << ": " << wname << " " << shape_str(w) << " holds filters for " << w[0]
                   << "x" << w[1] << " output positions but " << xname << " " << shape_str(x)
                   << " (filter " << p.filter_size << ", padding " << padding << ", stride "
                   << stride << ") has " << p.out_h << "x" << p.out_w);
  return p;
}

void check_op(const char* op, LocalOp which, std::initializer_list<Arg> args, const Arg& out,
              int variant) {
  check_device(op, args);
  for (const Arg& a : args) check_dtype(op, a, 'f');
  check_writable(op, out);
  const int count = OP(local_variant_count)(which);
  CONVNET_CHECK(variant >= 0 && variant < count, op << ": variant " << variant
                    << " does not exist (this backend has 0.." << count - 1 << ")");
}

LocalOp local_op_by_name(const std::string& name) {
  static const char* names[] = {"local_fwd", "local_bwd_data", "local_bwd_weights"};
  for (int i = 0; i < 3; ++i)
    if (name == names[i]) return LocalOp(i);
  CONVNET_CHECK(false, "local_variant_count: unknown op '" << name
                       << "' (local_fwd, local_bwd_data, local_bwd_weights)");
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(local) {
  using namespace convnet;
  m.def("local_fwd", [](TensorArg x, TensorArg w, TensorArg y, int padding, int stride,
                        int groups, bool accumulate, int variant) {
    const char* op = "local_fwd";
    check_op(op, LocalOp::local_fwd, {{"x", x}, {"w", w}, {"y", y}}, {"y", y}, variant);
    ConvParams p = local_params(op, "x", x.shape, "w", w.shape, padding, stride, groups, variant);
    check_shape(op, {"y", y}, conv_out_shape(p));
    without_gil([&] {
      OP(local_fwd)(p, x.ptr<float>(), w.ptr<float>(), y.ptr<float>(), accumulate);
    });
  }, py::arg("x"), py::arg("w"), py::arg("y"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"), py::arg("accumulate"), py::arg("variant"));

  m.def("local_bwd_data", [](TensorArg dy, TensorArg w, TensorArg dx, int padding, int stride,
                             int groups, bool accumulate, int variant) {
    const char* op = "local_bwd_data";
    check_op(op, LocalOp::local_bwd_data, {{"dy", dy}, {"w", w}, {"dx", dx}}, {"dx", dx},
             variant);
    ConvParams p = local_params(op, "dx", dx.shape, "w", w.shape, padding, stride, groups,
                                variant);
    check_shape(op, {"dy", dy}, conv_out_shape(p));
    without_gil([&] {
      OP(local_bwd_data)(p, dy.ptr<float>(), w.ptr<float>(), dx.ptr<float>(), accumulate);
    });
  }, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"), py::arg("accumulate"), py::arg("variant"));

  m.def("local_bwd_weights", [](TensorArg x, TensorArg dy, TensorArg dw, int padding, int stride,
                                int groups, bool accumulate, int variant) {
    const char* op = "local_bwd_weights";
    check_op(op, LocalOp::local_bwd_weights, {{"x", x}, {"dy", dy}, {"dw", dw}}, {"dw", dw},
             variant);
    ConvParams p = local_params(op, "x", x.shape, "dw", dw.shape, padding, stride, groups,
                                variant);
    check_shape(op, {"dy", dy}, conv_out_shape(p));
    without_gil([&] {
      OP(local_bwd_weights)(p, x.ptr<float>(), dy.ptr<float>(), dw.ptr<float>(), accumulate);
    });
  }, py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"), py::arg("accumulate"), py::arg("variant"));

  // The filter shape (Ho, Wo, C/groups, fs, fs, F) of a layer on images x_shape (C, H, W, N).
  m.def("local_weight_shape", [](const std::vector<int64_t>& x, int filters, int filter_size,
                                 int padding, int stride, int groups) {
    const char* op = "local_weight_shape";
    CONVNET_CHECK(groups >= 1 && x.size() == 4 && x[0] % groups == 0,
                  op << ": " << shape_str(x) << " is not (C, H, W, N) with C divisible by groups="
                     << groups);
    ConvParams p = conv_params(op, "x", x, "w", {x[0] / groups, filter_size, filter_size,
                                                 filters}, padding, stride, groups, 0);
    return std::vector<int64_t>{p.out_h, p.out_w, x[0] / groups, filter_size, filter_size,
                                filters};
  }, py::arg("x_shape"), py::arg("filters"), py::arg("filter_size"), py::arg("padding"),
     py::arg("stride"), py::arg("groups"));

  m.def("local_variant_count", [](const std::string& op) {
    return OP(local_variant_count)(local_op_by_name(op));
  }, py::arg("op"));
}
