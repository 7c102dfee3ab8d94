#include <pybind11/stl.h>

#include <optional>

#include "neuron.h"
#include "registry.h"
#include "tensor_arg.h"

namespace convnet {
namespace {

NeuronParams neuron_params(const char* op, int kind, float a, float b) {
  CONVNET_CHECK(kind >= 0 && kind < kNumNeuronKinds,
                op << ": unknown neuron kind " << kind << " (0.." << kNumNeuronKinds - 1 << ")");
  NeuronParams p;
  p.kind = NeuronKind(kind);
  p.a = a;
  p.b = b;
  CONVNET_CHECK(p.kind != NeuronKind::tanh || a != 0.f,
                op << ": tanh[a,b] needs a != 0 (its gradient is computed from y / a)");
  CONVNET_CHECK(p.kind != NeuronKind::brelu || a > 0.f,
                op << ": brelu[a] needs a > 0, got a = " << a);
  return p;
}

void check_same_size(const char* op, const Arg& a, const Arg& ref) {
  CONVNET_CHECK(a.t.numel() == ref.t.numel(), op << ": " << a.name << " has shape "
                                                 << shape_str(a.t.shape) << " but " << ref.name
                                                 << " has shape " << shape_str(ref.t.shape));
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(neuron) {
  using namespace convnet;
  m.def("neuron_kinds", [] {
    py::list names;
    for (int k = 0; k < kNumNeuronKinds; ++k) names.append(neuron_kind_name(NeuronKind(k)));
    return names;
  }, "Neuron kind names in the order of their integer codes.");
  m.def("neuron_bwd_reads", [](int kind) {
    NeuronParams p = neuron_params("neuron_bwd_reads", kind, 1.f, 1.f);
    int r = neuron_bwd_reads(p.kind);
    return std::string(r == kNeuronReadsX ? "x" : r == kNeuronReadsY ? "y" : "");
  }, py::arg("kind"), "Which forward tensor the backward of a kind reads: 'x', 'y' or ''.");
  m.def("neuron_fwd", [](TensorArg x, TensorArg y, int kind, float a, float b) {
    const char* op = "neuron_fwd";
    check_device(op, {{"x", x}, {"y", y}});
    check_dtype(op, {"x", x}, 'f');
    check_dtype(op, {"y", y}, 'f');
    check_writable(op, {"y", y});
    check_same_size(op, {"y", y}, {"x", x});
    NeuronParams p = neuron_params(op, kind, a, b);
    without_gil([&] { OP(neuron_fwd)(p, x.ptr<float>(), y.ptr<float>(), x.numel()); });
  }, py::arg("x"), py::arg("y"), py::arg("kind"), py::arg("a"), py::arg("b"));
  // x and y may be None when the kind does not read them.
  m.def("neuron_bwd", [](TensorArg dy, std::optional<TensorArg> xo, std::optional<TensorArg> yo,
                         TensorArg dx, int kind,
                         float a, float b, bool accumulate) {
    const char* op = "neuron_bwd";
    NeuronParams p = neuron_params(op, kind, a, b);
    const int reads = neuron_bwd_reads(p.kind);
    const char* name = neuron_kind_name(p.kind);
    CONVNET_CHECK(!(reads & kNeuronReadsX) || xo,
                  op << ": the " << name << " gradient reads x (the forward input); got None");
    CONVNET_CHECK(!(reads & kNeuronReadsY) || yo,
                  op << ": the " << name << " gradient reads y (the forward output); got None");
    const TensorArg x = xo.value_or(dy), y = yo.value_or(dy);
    check_device(op, {{"dy", dy}, {"x", x}, {"y", y}, {"dx", dx}});
    for (Arg t : {Arg{"dy", dy}, Arg{"x", x}, Arg{"y", y}, Arg{"dx", dx}}) {
      check_dtype(op, t, 'f');
      check_same_size(op, t, {"dy", dy});
    }
    check_writable(op, {"dx", dx});
    without_gil([&] {
      OP(neuron_bwd)(p, dy.ptr<float>(), (reads & kNeuronReadsX) ? x.ptr<float>() : nullptr,
          (reads & kNeuronReadsY) ? y.ptr<float>() : nullptr, dx.ptr<float>(),
          dy.numel(), accumulate);
    });
  }, py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("dx"), py::arg("kind"), py::arg("a"),
     py::arg("b"), py::arg("accumulate"));
}
