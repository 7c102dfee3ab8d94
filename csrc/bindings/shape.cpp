// The output-size rules of csrc/common/shape.h, for Python's shape inference.
#include "registry.h"
#include "shape.h"
#include "check.h"

CONVNET_BINDINGS(shape) {
  using namespace convnet;
  m.def("conv_out_size", [](int img, int filter, int padding, int stride) {
    CONVNET_CHECK(stride >= 1 && padding >= 0 && filter >= 1,
                  "conv_out_size: need stride >= 1, padding >= 0, filter >= 1 (got stride "
                      << stride << ", padding " << padding << ", filter " << filter << ")");
    CONVNET_CHECK(filter <= img + 2 * padding, "filter of size " << filter
                      << " is larger than the padded image (" << img << " + 2*" << padding << ")");
    return conv_out_size(img, filter, padding, stride);
  }, py::arg("img"), py::arg("filter"), py::arg("padding"), py::arg("stride"));
  m.def("pool_out_size", [](int img, int size, int stride, int start) {
    CONVNET_CHECK(stride >= 1 && size >= 1 && start <= 0 && size + start <= img,
                  "pool_out_size: bad pooling window (image " << img << ", size " << size
                      << ", stride " << stride << ", start " << start << ")");
    return pool_out_size(img, size, stride, start);
  }, py::arg("img"), py::arg("size"), py::arg("stride"), py::arg("start") = 0);
}
