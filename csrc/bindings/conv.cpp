#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "conv.h"
#include "fc.h"
#include "registry.h"
#include "shape.h"
#include "tensor_arg.h"

namespace convnet {
namespace {

// ConvParams holds 32-bit sizes.
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

void check_floats(const char* op, std::initializer_list<Arg> args, int ndim) {
  for (const Arg& a : args) {
    check_dtype(op, a, 'f');
    if (ndim > 0) check_ndim(op, a, ndim);
  }
}

void check_variant(const char* op, ConvOp which, int variant) {
  int count = OP(conv_variant_count)(which);
  CONVNET_CHECK(variant >= 0 && variant < count, op << ": variant " << variant
                    << " does not exist (this backend has 0.." << count - 1 << ")");
}

// The geometry of a convolution from the image and filter shapes, checked; names the op.
//   x: (C, H, W, N), w: (C/groups, fs, fs, F)
ConvParams conv_params(const char* op, const char* xname, const std::vector<int64_t>& x,
                       const char* wname, const std::vector<int64_t>& w, int padding,
                       int stride, int groups, int variant) {
  for (size_t i = 0; i < 4; ++i)
    CONVNET_CHECK(x[i] <= kMaxDim && w[i] <= kMaxDim,
                  op << ": " << xname << " " << shape_str(x) << " or " << wname << " "
                     << shape_str(w) << " has a dimension above " << kMaxDim);
  CONVNET_CHECK(groups >= 1, op << ": groups must be >= 1, got " << groups);
  CONVNET_CHECK(stride >= 1, op << ": stride must be >= 1, got " << stride);
  CONVNET_CHECK(padding >= 0, op << ": padding must be >= 0, got " << padding);
  CONVNET_CHECK(x[0] % groups == 0, op << ": groups=" << groups << " does not divide the "
                                       << x[0] << " channels of " << xname << " "
                                       << shape_str(x));
  CONVNET_CHECK(w[3] % groups == 0, op << ": groups=" << groups << " does not divide the "
                                       << w[3] << " filters of " << wname << " "
                                       << shape_str(w));
  CONVNET_CHECK(w[1] == w[2], op << ": filters must be square, " << wname << " has shape "
                                 << shape_str(w) << " (C/groups, fs, fs, F)");
  CONVNET_CHECK(w[0] * groups == x[0],
                op << ": " << wname << " " << shape_str(w) << " expects " << w[0] << " x "
                   << groups << " (groups) channels but " << xname << " " << shape_str(x)
                   << " has " << x[0]);
  const int64_t pad2 = 2 * int64_t(padding);
  CONVNET_CHECK(w[1] >= 1 && w[1] <= x[1] + pad2 && w[1] <= x[2] + pad2,
                op << ": filter " << w[1] << "x" << w[1] << " does not fit the padded image "
                   << x[1] + pad2 << "x" << x[2] + pad2 << " (" << xname << " "
                   << shape_str(x) << ", padding " << padding << ")");
  CONVNET_CHECK(x[3] >= 1, op << ": " << xname << " " << shape_str(x) << " holds no images");
  ConvParams p;
  p.channels = int(x[0]), p.height = int(x[1]), p.width = int(x[2]), p.images = int(x[3]);
  p.filters = int(w[3]), p.filter_size = int(w[1]);
  p.padding = padding, p.stride = stride, p.groups = groups;
  const int64_t out_h = conv_out_size(p.height, p.filter_size, padding, stride);
  const int64_t out_w = conv_out_size(p.width, p.filter_size, padding, stride);
  CONVNET_CHECK(out_h <= kMaxDim && out_w <= kMaxDim,
                op << ": the output would be " << out_h << "x" << out_w << " (padding " << padding
                   << "), above " << kMaxDim);
  p.out_h = int(out_h), p.out_w = int(out_w);
  p.variant = variant;
  return p;
}

std::vector<int64_t> out_shape(const ConvParams& p) {
  return {p.filters, p.out_h, p.out_w, p.images};
}

ConvOp conv_op_by_name(const std::string& name) {
  static const char* names[] = {"conv_fwd", "conv_bwd_data", "conv_bwd_weights",
                                "fc_fwd",   "fc_bwd_data",   "fc_bwd_weights"};
  for (int i = 0; i < 6; ++i)
    if (name == names[i]) return ConvOp(i);
  CONVNET_CHECK(false, "conv_variant_count: unknown op '" << name << "' (conv_fwd, conv_bwd_data, "
                       "conv_bwd_weights, fc_fwd, fc_bwd_data, fc_bwd_weights)");
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(conv) {
  using namespace convnet;
  m.def("conv_fwd", [](TensorArg x, TensorArg w, TensorArg y, int padding, int stride,
                       int groups, bool accumulate, int variant) {
    const char* op = "conv_fwd";
    check_device(op, {{"x", x}, {"w", w}, {"y", y}});
    check_floats(op, {{"x", x}, {"w", w}, {"y", y}}, 4);
    check_writable(op, {"y", y});
    check_variant(op, ConvOp::conv_fwd, variant);
    ConvParams p = conv_params(op, "x", x.shape, "w", w.shape, padding, stride, groups, variant);
    check_shape(op, {"y", y}, out_shape(p));
    without_gil([&] {
      OP(conv_fwd)(p, x.ptr<float>(), w.ptr<float>(), y.ptr<float>(), accumulate);
    });
  }, py::arg("x"), py::arg("w"), py::arg("y"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"), py::arg("accumulate"), py::arg("variant"));

  m.def("conv_bwd_data", [](TensorArg dy, TensorArg w, TensorArg dx, int padding, int stride,
                            int groups, bool accumulate, int variant) {
    const char* op = "conv_bwd_data";
    check_device(op, {{"dy", dy}, {"w", w}, {"dx", dx}});
    check_floats(op, {{"dy", dy}, {"w", w}, {"dx", dx}}, 4);
    check_writable(op, {"dx", dx});
    check_variant(op, ConvOp::conv_bwd_data, variant);
    ConvParams p = conv_params(op, "dx", dx.shape, "w", w.shape, padding, stride, groups,
                               variant);
    check_shape(op, {"dy", dy}, out_shape(p));
    without_gil([&] {
      OP(conv_bwd_data)(p, dy.ptr<float>(), w.ptr<float>(), dx.ptr<float>(), accumulate);
    });
  }, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"), py::arg("accumulate"), py::arg("variant"));

  m.def("conv_bwd_weights", [](TensorArg x, TensorArg dy, TensorArg dw, int padding, int stride,
                               int groups, bool accumulate, int variant) {
    const char* op = "conv_bwd_weights";
    check_device(op, {{"x", x}, {"dy", dy}, {"dw", dw}});
    check_floats(op, {{"x", x}, {"dy", dy}, {"dw", dw}}, 4);
    check_writable(op, {"dw", dw});
    check_variant(op, ConvOp::conv_bwd_weights, variant);
    ConvParams p = conv_params(op, "x", x.shape, "dw", dw.shape, padding, stride, groups,
                               variant);
    check_shape(op, {"dy", dy}, out_shape(p));
    without_gil([&] {
      OP(conv_bwd_weights)(p, x.ptr<float>(), dy.ptr<float>(), dw.ptr<float>(), accumulate);
    });
  }, py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"), py::arg("accumulate"), py::arg("variant"));

  // y (F, ...) += b (F) broadcast over the rest.
  m.def("bias_fwd", [](TensorArg y, TensorArg b) {
    const char* op = "bias_fwd";
    check_device(op, {{"y", y}, {"b", b}});
    check_floats(op, {{"y", y}, {"b", b}}, 0);
    check_writable(op, {"y", y});
    CONVNET_CHECK(y.ndim() >= 1, op << ": y must have a leading filter dimension, got shape "
                                    << shape_str(y.shape));
    check_shape(op, {"b", b}, {y.dim(0)});
    int64_t f = y.dim(0);
    without_gil([&] { OP(bias_fwd)(y.ptr<float>(), b.ptr<float>(), f, f ? y.numel() / f : 0); });
  }, py::arg("y"), py::arg("b"));

  m.def("bias_bwd", [](TensorArg dy, TensorArg db, bool accumulate) {
    const char* op = "bias_bwd";
    check_device(op, {{"dy", dy}, {"db", db}});
    check_floats(op, {{"dy", dy}, {"db", db}}, 0);
    check_writable(op, {"db", db});
    CONVNET_CHECK(dy.ndim() >= 1, op << ": dy must have a leading filter dimension, got shape "
                                     << shape_str(dy.shape));
    check_shape(op, {"db", db}, {dy.dim(0)});
    int64_t f = dy.dim(0);
    without_gil([&] {
      OP(bias_bwd)(dy.ptr<float>(), db.ptr<float>(), f, f ? dy.numel() / f : 0, accumulate);
    });
  }, py::arg("dy"), py::arg("db"), py::arg("accumulate"));

  m.def("fc_fwd", [](TensorArg x, TensorArg w, std::optional<TensorArg> b, TensorArg y,
                     bool accumulate, int variant) {
    const char* op = "fc_fwd";
    if (b)
      check_device(op, {{"x", x}, {"w", w}, {"b", *b}, {"y", y}});
    else
      check_device(op, {{"x", x}, {"w", w}, {"y", y}});
    check_floats(op, {{"x", x}, {"w", w}, {"y", y}}, 2);
    check_writable(op, {"y", y});
    check_variant(op, ConvOp::fc_fwd, variant);
    CONVNET_CHECK(w.dim(0) == x.dim(0), op << ": w " << shape_str(w.shape) << " (inputs, outputs)"
                                           << " does not match x " << shape_str(x.shape)
                                           << " (inputs, images)");
    check_shape(op, {"y", y}, {w.dim(1), x.dim(1)});
    if (b) {
      check_floats(op, {{"b", *b}}, 0);
      check_shape(op, {"b", *b}, {w.dim(1)});
    }
    FcParams p;
    p.inputs = x.dim(0), p.outputs = w.dim(1), p.images = x.dim(1), p.variant = variant;
    without_gil([&] {
      OP(fc_fwd)(p, x.ptr<float>(), w.ptr<float>(), b ? b->ptr<float>() : nullptr, y.ptr<float>(),
          accumulate);
    });
  }, py::arg("x"), py::arg("w"), py::arg("b").none(true), py::arg("y"), py::arg("accumulate"),
     py::arg("variant"));

  m.def("fc_bwd_data", [](TensorArg dy, TensorArg w, TensorArg dx, bool accumulate,
                          int variant) {
    const char* op = "fc_bwd_data";
    check_device(op, {{"dy", dy}, {"w", w}, {"dx", dx}});
    check_floats(op, {{"dy", dy}, {"w", w}, {"dx", dx}}, 2);
    check_writable(op, {"dx", dx});
    check_variant(op, ConvOp::fc_bwd_data, variant);
    CONVNET_CHECK(w.dim(1) == dy.dim(0), op << ": w " << shape_str(w.shape)
                                            << " (inputs, outputs) does not match dy "
                                            << shape_str(dy.shape) << " (outputs, images)");
    check_shape(op, {"dx", dx}, {w.dim(0), dy.dim(1)});
    FcParams p;
    p.inputs = w.dim(0), p.outputs = w.dim(1), p.images = dy.dim(1), p.variant = variant;
    without_gil([&] {
      OP(fc_bwd_data)(p, dy.ptr<float>(), w.ptr<float>(), dx.ptr<float>(), accumulate);
    });
  }, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("accumulate"), py::arg("variant"));

  m.def("fc_bwd_weights", [](TensorArg x, TensorArg dy, TensorArg dw, bool accumulate,
                             int variant) {
    const char* op = "fc_bwd_weights";
    check_device(op, {{"x", x}, {"dy", dy}, {"dw", dw}});
    check_floats(op, {{"x", x}, {"dy", dy}, {"dw", dw}}, 2);
    check_writable(op, {"dw", dw});
    check_variant(op, ConvOp::fc_bwd_weights, variant);
    CONVNET_CHECK(x.dim(1) == dy.dim(1), op << ": x " << shape_str(x.shape)
                                            << " (inputs, images) and dy " << shape_str(dy.shape)
                                            << " (outputs, images) differ in images");
    check_shape(op, {"dw", dw}, {x.dim(0), dy.dim(0)});
    FcParams p;
    p.inputs = x.dim(0), p.outputs = dy.dim(0), p.images = x.dim(1), p.variant = variant;
    without_gil([&] {
      OP(fc_bwd_weights)(p, x.ptr<float>(), dy.ptr<float>(), dw.ptr<float>(), accumulate);
    });
  }, py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("accumulate"), py::arg("variant"));

  // The output shape (F, Ho, Wo, N) of a convolution, after the checks the ops make.
  m.def("conv_out_shape", [](const std::string& op, const std::vector<int64_t>& x,
                             const std::vector<int64_t>& w, int padding, int stride, int groups) {
    bool fwd = op != "conv_bwd_weights";
    const char* xname = op == "conv_bwd_data" ? "dx" : "x";
    const char* wname = fwd ? "w" : "dw";
    CONVNET_CHECK(x.size() == 4, op << ": " << xname << " must be (C, H, W, N), got shape "
                                    << shape_str(x));
    CONVNET_CHECK(w.size() == 4, op << ": " << wname << " must be (C/groups, fs, fs, F), got shape "
                                    << shape_str(w));
    return out_shape(conv_params(op.c_str(), xname, x, wname, w, padding, stride, groups, 0));
  }, py::arg("op"), py::arg("x_shape"), py::arg("w_shape"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"));

  m.def("conv_variant_count", [](const std::string& op) {
    return OP(conv_variant_count)(conv_op_by_name(op));
  }, py::arg("op"));
}
