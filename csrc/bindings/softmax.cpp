#include "registry.h"
#include "softmax.h"
#include "tensor_arg.h"

namespace convnet {
namespace {

// x: (K, N) float32 -> params; every other (K, N) argument must match it.
SoftmaxParams softmax_params(const char* op, const Arg& x) {
  check_dtype(op, x, 'f');
  CONVNET_CHECK(x.t.ndim() == 2, op << ": " << x.name << " must be (classes, images), got shape "
                                    << shape_str(x.t.shape));
  CONVNET_CHECK(x.t.dim(0) >= 1, op << ": " << x.name << " has shape " << shape_str(x.t.shape)
                                    << ": needs at least one class");
  SoftmaxParams p;
  p.classes = x.t.dim(0);
  p.images = x.t.dim(1);
  return p;
}

void check_like(const char* op, const Arg& a, const SoftmaxParams& p, bool out) {
  check_dtype(op, a, 'f');
  check_shape(op, a, {p.classes, p.images});
  if (out) check_writable(op, a);
}

void check_labels_arg(const char* op, const Arg& labels, const SoftmaxParams& p) {
  check_dtype(op, labels, 'i');
  check_shape(op, labels, {p.images});
}

// The batch sums as the Python ops return them.
py::dict cost_dict(const SoftmaxCost& c) {
  py::dict d;
  d["logprob"] = c.logprob;
  d["top1"] = c.top1;
  d["top5"] = c.top5;
  return d;
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(softmax) {
  using namespace convnet;
  m.def("softmax_fwd", [](TensorArg x, TensorArg probs) {
    const char* op = "softmax";
    check_device(op, {{"x", x}, {"probs", probs}});
    SoftmaxParams p = softmax_params(op, {"x", x});
    check_like(op, {"probs", probs}, p, true);
    without_gil([&] { OP(softmax_fwd)(p, x.ptr<float>(), probs.ptr<float>()); });
  }, py::arg("x"), py::arg("probs"));
  m.def("softmax_bwd", [](TensorArg probs, TensorArg dprobs, TensorArg dx, bool accumulate) {
    const char* op = "softmax_bwd";
    check_device(op, {{"probs", probs}, {"dprobs", dprobs}, {"dx", dx}});
    SoftmaxParams p = softmax_params(op, {"probs", probs});
    check_like(op, {"dprobs", dprobs}, p, false);
    check_like(op, {"dx", dx}, p, true);
    without_gil([&] {
      OP(softmax_bwd)(p, probs.ptr<float>(), dprobs.ptr<float>(), dx.ptr<float>(), accumulate);
    });
  }, py::arg("probs"), py::arg("dprobs"), py::arg("dx"), py::arg("accumulate"));
  m.def("softmax_xent_fwd", [](TensorArg x, TensorArg labels, TensorArg probs) {
    const char* op = "softmax_xent_fwd";
    check_device(op, {{"x", x}, {"labels", labels}, {"probs", probs}});
    SoftmaxParams p = softmax_params(op, {"x", x});
    check_labels_arg(op, {"labels", labels}, p);
    check_like(op, {"probs", probs}, p, true);
    return cost_dict(without_gil([&] {
      return OP(softmax_xent_fwd)(p, x.ptr<float>(), labels.ptr<int32_t>(),
          probs.ptr<float>());
    }));
  }, py::arg("x"), py::arg("labels"), py::arg("probs"));
  m.def("softmax_xent_bwd", [](TensorArg probs, TensorArg labels, TensorArg dx, float scale,
                               bool accumulate, bool labels_checked) {
    const char* op = "softmax_xent_bwd";
    check_device(op, {{"probs", probs}, {"labels", labels}, {"dx", dx}});
    SoftmaxParams p = softmax_params(op, {"probs", probs});
    p.labels_checked = labels_checked;
    check_labels_arg(op, {"labels", labels}, p);
    check_like(op, {"dx", dx}, p, true);
    without_gil([&] {
      OP(softmax_xent_bwd)(p, probs.ptr<float>(), labels.ptr<int32_t>(), scale, dx.ptr<float>(),
          accumulate);
    });
  }, py::arg("probs"), py::arg("labels"), py::arg("dx"), py::arg("scale"),
     py::arg("accumulate"), py::arg("labels_checked") = false);
  m.def("logreg_fwd", [](TensorArg probs, TensorArg labels) {
    const char* op = "logreg_fwd";
    check_device(op, {{"probs", probs}, {"labels", labels}});
    SoftmaxParams p = softmax_params(op, {"probs", probs});
    check_labels_arg(op, {"labels", labels}, p);
    return cost_dict(without_gil([&] {
      return OP(logreg_fwd)(p, probs.ptr<float>(), labels.ptr<int32_t>());
    }));
  }, py::arg("probs"), py::arg("labels"));
  m.def("logreg_record", [](TensorArg probs, TensorArg labels, TensorArg nll, TensorArg rank,
                            TensorArg records, int64_t slot) {
    const char* op = "logreg_record";
    check_device(op, {{"probs", probs}, {"labels", labels}, {"nll", nll}, {"rank", rank},
                      {"records", records}});
    SoftmaxParams p = softmax_params(op, {"probs", probs});
    check_labels_arg(op, {"labels", labels}, p);
    check_dtype(op, {"nll", nll}, 'f');
    check_shape(op, {"nll", nll}, {p.images});
    check_writable(op, {"nll", nll});
    check_dtype(op, {"rank", rank}, 'i');
    check_shape(op, {"rank", rank}, {p.images});
    check_writable(op, {"rank", rank});
    check_dtype(op, {"records", records}, 'i');
    check_ndim(op, {"records", records}, 2);
    CONVNET_CHECK(records.dim(1) == kCostRecordInts,
                  op << ": records must be (rows, " << kCostRecordInts << "), got shape "
                     << shape_str(records.shape));
    check_writable(op, {"records", records});
    CONVNET_CHECK(slot >= 0 && slot < records.dim(0),
                  op << ": slot " << slot << " is not a row of records (0.."
                     << records.dim(0) - 1 << ")");
    auto* record = reinterpret_cast<CostRecord*>(records.ptr<int32_t>() + slot * kCostRecordInts);
    without_gil([&] {
      OP(logreg_record)(p, probs.ptr<float>(), labels.ptr<int32_t>(), nll.ptr<float>(),
                        rank.ptr<int32_t>(), record);
    });
  }, py::arg("probs"), py::arg("labels"), py::arg("nll"), py::arg("rank"), py::arg("records"),
     py::arg("slot"));
  m.def("logreg_bwd", [](TensorArg probs, TensorArg labels, TensorArg dprobs, float scale,
                         bool accumulate) {
    const char* op = "logreg_bwd";
    check_device(op, {{"probs", probs}, {"labels", labels}, {"dprobs", dprobs}});
    SoftmaxParams p = softmax_params(op, {"probs", probs});
    check_labels_arg(op, {"labels", labels}, p);
    check_like(op, {"dprobs", dprobs}, p, true);
    without_gil([&] {
      OP(logreg_bwd)(p, probs.ptr<float>(), labels.ptr<int32_t>(), scale, dprobs.ptr<float>(),
          accumulate);
    });
  }, py::arg("probs"), py::arg("labels"), py::arg("dprobs"), py::arg("scale"),
     py::arg("accumulate"));
}
