// Pooling bindings. The output size comes from the caller (convnet/ops/pool.py computes
// pool_out_size, or takes cuda-convnet's explicit outputsX); every window must hold a pixel.
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "pool.h"
#include "registry.h"
#include "relu_bias.h"
#include "tensor_arg.h"

namespace convnet {
namespace {

PoolMode pool_mode(const char* op, const std::string& mode) {
  if (mode == "max") return PoolMode::max;
  if (mode == "avg") return PoolMode::avg;
  CONVNET_CHECK(false, op << ": mode must be 'max' or 'avg', got '" << mode << "'");
}

void check_windows(const char* op, const char* axis, int img, int size, int stride, int start,
                   int outs) {
  CONVNET_CHECK(outs >= 1, op << ": " << outs << " outputs along " << axis << " (need >= 1)");
  // In 64 bits: outs and stride near 2^31 must not wrap round into a window that fits.
  const int64_t first = start, last = start + int64_t(outs - 1) * stride;
  CONVNET_CHECK(first + size > 0 && first < img && last < img && last + size > 0,
                op << ": " << outs << " windows of size " << size << ", stride " << stride
                   << ", start " << start << " along " << axis << " of " << img
                   << " pixels: windows " << first << ".." << first + size - 1 << " to " << last
                   << ".." << last + size - 1 << " must each overlap the image");
}

int64_t bytes_of(const TensorArg& t) { return t.numel() * (t.dtype == 'B' ? 1 : 4); }

void check_disjoint(const char* op, const Arg& out, const Arg& in) {
  const char *a = out.t.ptr<char>(), *b = in.t.ptr<char>();
  const int64_t na = bytes_of(out.t), nb = bytes_of(in.t);
  CONVNET_CHECK(na == 0 || nb == 0 || a + na <= b || b + nb <= a,
                op << ": output " << out.name << " overlaps input " << in.name);
}

// x (C, H, W, N) and y (C, out_h, out_w, N) against the pooling geometry.
PoolParams pool_params(const char* op, const Arg& x, const Arg& y, int size, int stride,
                       int start, int out_h, int out_w, const std::string& mode) {
  check_dtype(op, x, 'f');
  check_dtype(op, y, 'f');
  check_ndim(op, x, 4);
  CONVNET_CHECK(size >= 1 && stride >= 1,
                op << ": size and stride must be >= 1, got size " << size << ", stride " << stride);
  PoolParams p;
  p.channels = int(x.t.dim(0));
  p.height = int(x.t.dim(1));
  p.width = int(x.t.dim(2));
  p.images = int(x.t.dim(3));
  p.size = size;
  p.stride = stride;
  p.start = start;
  p.out_h = out_h;
  p.out_w = out_w;
  p.mode = pool_mode(op, mode);
  check_shape(op, y, {x.t.dim(0), out_h, out_w, x.t.dim(3)});
  check_windows(op, "rows", p.height, size, stride, start, out_h);
  check_windows(op, "columns", p.width, size, stride, start, out_w);
  return p;
}

// The checks of a pooling backward (pool_bwd, pool_bwd_relu_bias), and its params.
PoolParams pool_bwd_params(const char* op, const TensorArg& dy, const TensorArg& x,
                           const TensorArg& y, const TensorArg& dx, int size, int stride,
                           int start, const std::string& mode) {
  check_device(op, {{"dy", dy}, {"x", x}, {"y", y}, {"dx", dx}});
  check_ndim(op, {"dy", dy}, 4);
  PoolParams p = pool_params(op, {"x", x}, {"dy", dy}, size, stride, start, int(dy.dim(1)),
                             int(dy.dim(2)), mode);
  check_dtype(op, {"y", y}, 'f');
  check_dtype(op, {"dx", dx}, 'f');
  check_shape(op, {"y", y}, dy.shape);
  check_shape(op, {"dx", dx}, x.shape);
  check_writable(op, {"dx", dx});
  check_disjoint(op, {"dx", dx}, {"dy", dy});
  check_disjoint(op, {"dx", dx}, {"x", x});
  check_disjoint(op, {"dx", dx}, {"y", y});
  return p;
}

// Max pooling's winners (pool.h): uint8 of the outputs' shape `like`, for a window that fits.
void check_winners(const char* op, const PoolParams& p, const Arg& winners, const Arg& like) {
  CONVNET_CHECK(p.mode == PoolMode::max, op << ": winners are for max pooling only");
  CONVNET_CHECK(p.size <= kPoolMaxWinnerSize,
                op << ": winners need windows of at most " << kPoolMaxWinnerSize << "x"
                   << kPoolMaxWinnerSize << " pixels, got size " << p.size);
  check_dtype(op, winners, 'B');
  check_shape(op, winners, like.t.shape);
}

// The checks of a backward from winners (dx's shape is x's), and its params.
PoolParams pool_winners_bwd_params(const char* op, const TensorArg& dy, const TensorArg& winners,
                                   const TensorArg& dx, int size, int stride, int start) {
  check_device(op, {{"dy", dy}, {"winners", winners}, {"dx", dx}});
  check_ndim(op, {"dy", dy}, 4);
  PoolParams p = pool_params(op, {"dx", dx}, {"dy", dy}, size, stride, start, int(dy.dim(1)),
                             int(dy.dim(2)), "max");
  check_winners(op, p, {"winners", winners}, {"dy", dy});
  check_writable(op, {"dx", dx});
  check_disjoint(op, {"dx", dx}, {"dy", dy});
  check_disjoint(op, {"dx", dx}, {"winners", winners});
  return p;
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(pool) {
  using namespace convnet;
  // winners: None, or uint8 of y's shape that records each max window's winner (pool.h).
  m.def("pool_fwd", [](TensorArg x, TensorArg y, int size, int stride, int start, int out_h,
                       int out_w, const std::string& mode, std::optional<TensorArg> winners) {
    const char* op = "pool_fwd";
    check_device(op, {{"x", x}, {"y", y}});
    PoolParams p = pool_params(op, {"x", x}, {"y", y}, size, stride, start, out_h, out_w, mode);
    check_writable(op, {"y", y});
    check_disjoint(op, {"y", y}, {"x", x});
    uint8_t* w = nullptr;
    if (winners) {
      check_device(op, {{"x", x}, {"winners", *winners}});
      check_winners(op, p, {"winners", *winners}, {"y", y});
      check_writable(op, {"winners", *winners});
      check_disjoint(op, {"winners", *winners}, {"x", x});
      check_disjoint(op, {"winners", *winners}, {"y", y});
      w = winners->ptr<uint8_t>();
    }
    without_gil([&] { OP(pool_fwd)(p, x.ptr<float>(), y.ptr<float>(), w); });
  }, py::arg("x"), py::arg("y"), py::arg("size"), py::arg("stride"), py::arg("start"),
     py::arg("out_h"), py::arg("out_w"), py::arg("mode"), py::arg("winners") = py::none());
  // y is pool_fwd's output (max: the backward finds the argmax by comparing x with it; avg:
  // unused, the caller may pass dy).
  m.def("pool_bwd", [](TensorArg dy, TensorArg x, TensorArg y, TensorArg dx, int size, int stride,
                       int start, const std::string& mode, bool accumulate) {
    PoolParams p = pool_bwd_params("pool_bwd", dy, x, y, dx, size, stride, start, mode);
    without_gil([&] {
      OP(pool_bwd)(p, dy.ptr<float>(), x.ptr<float>(), y.ptr<float>(), dx.ptr<float>(),
          accumulate);
    });
  }, py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("dx"), py::arg("size"),
     py::arg("stride"), py::arg("start"), py::arg("mode"), py::arg("accumulate"));
  // pool_bwd writing dx, then dx masked by x > 0 and its channels summed into db
  // (csrc/common/relu_bias.h): x is a layer's output after its ReLU, db that layer's bias grad.
  m.def("pool_bwd_relu_bias", [](TensorArg dy, TensorArg x, TensorArg y, TensorArg dx,
                                 TensorArg db, int size, int stride, int start,
                                 const std::string& mode) {
    const char* op = "pool_bwd_relu_bias";
    PoolParams p = pool_bwd_params(op, dy, x, y, dx, size, stride, start, mode);
    check_device(op, {{"dx", dx}, {"db", db}});
    check_dtype(op, {"db", db}, 'f');
    check_writable(op, {"db", db});
    check_shape(op, {"db", db}, {x.dim(0)});
    check_disjoint(op, {"db", db}, {"dx", dx});
    without_gil([&] {
      OP(pool_bwd_relu_bias)(p, dy.ptr<float>(), x.ptr<float>(), y.ptr<float>(), dx.ptr<float>(),
                             db.ptr<float>());
    });
  }, py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("dx"), py::arg("db"), py::arg("size"),
     py::arg("stride"), py::arg("start"), py::arg("mode"));
  // The max backward from pool_fwd's winners (x and y are not read): the bits of pool_bwd.
  m.def("pool_bwd_winners", [](TensorArg dy, TensorArg winners, TensorArg dx, int size, int stride,
                               int start, bool accumulate) {
    PoolParams p = pool_winners_bwd_params("pool_bwd_winners", dy, winners, dx, size, stride,
                                           start);
    without_gil([&] {
      OP(pool_bwd_winners)(p, dy.ptr<float>(), winners.ptr<uint8_t>(), dx.ptr<float>(),
                           accumulate);
    });
  }, py::arg("dy"), py::arg("winners"), py::arg("dx"), py::arg("size"), py::arg("stride"),
     py::arg("start"), py::arg("accumulate"));
  // pool_bwd_relu_bias from the winners: the same bits.
  m.def("pool_bwd_winners_relu_bias", [](TensorArg dy, TensorArg winners, TensorArg dx,
                                         TensorArg db, int size, int stride, int start) {
    const char* op = "pool_bwd_winners_relu_bias";
    PoolParams p = pool_winners_bwd_params(op, dy, winners, dx, size, stride, start);
    check_device(op, {{"dx", dx}, {"db", db}});
    check_dtype(op, {"db", db}, 'f');
    check_writable(op, {"db", db});
    check_shape(op, {"db", db}, {dx.dim(0)});
    check_disjoint(op, {"db", db}, {"dx", dx});
    without_gil([&] {
      OP(pool_bwd_winners_relu_bias)(p, dy.ptr<float>(), winners.ptr<uint8_t>(), dx.ptr<float>(),
                                     db.ptr<float>());
    });
  }, py::arg("dy"), py::arg("winners"), py::arg("dx"), py::arg("db"), py::arg("size"),
     py::arg("stride"), py::arg("start"));
}
