// The output-size rules of csrc/common/shape.h, for Python's shape inference. Every argument is
// range-checked first (sizes up to 2^31 - 1, the largest a kernel takes), so the 64-bit
// formulas cannot overflow and a result is exactly the documented formula's.
#include "registry.h"
#include "shape.h"
#include "check.h"

namespace convnet {
namespace {

constexpr int64_t kMaxSize = (int64_t(1) << 31) - 1;

void check_size(const char* op, const char* name, int64_t v, int64_t lo) {
  CONVNET_CHECK(v >= lo && v <= kMaxSize,
                op << ": " << name << " must be in " << lo << ".." << kMaxSize << ", got " << v);
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(shape) {
  using namespace convnet;
  m.def("conv_out_size", [](int64_t img, int64_t filter, int64_t padding, int64_t stride) {
    const char* op = "conv_out_size";
    check_size(op, "img", img, 1);
    check_size(op, "filter", filter, 1);
    check_size(op, "padding", padding, 0);
    check_size(op, "stride", stride, 1);
    CONVNET_CHECK(filter <= img + 2 * padding, "filter of size " << filter
                      << " is larger than the padded image (" << img << " + 2*" << padding << ")");
    return conv_out_size(img, filter, padding, stride);
  }, py::arg("img"), py::arg("filter"), py::arg("padding"), py::arg("stride"));
  m.def("pool_out_size", [](int64_t img, int64_t size, int64_t stride, int64_t start) {
    const char* op = "pool_out_size";
    check_size(op, "img", img, 1);
    check_size(op, "size", size, 1);
    check_size(op, "stride", stride, 1);
    CONVNET_CHECK(start <= 0 && start >= -kMaxSize && size + start <= img,
                  "pool_out_size: bad pooling window (image " << img << ", size " << size
                      << ", stride " << stride << ", start " << start << ")");
    return pool_out_size(img, size, stride, start);
  }, py::arg("img"), py::arg("size"), py::arg("stride"), py::arg("start") = 0);
}
