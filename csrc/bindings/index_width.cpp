// The CUDA and emulated backends' index-width switch (csrc/common/index_width.h), for the tests.
#if !defined(CONVNET_BACKEND_CPU)
#include "index_width.h"
#include "registry.h"

CONVNET_BINDINGS(index_width) {
  m.def("force_wide_indices", &convnet::force_wide_indices, py::arg("on"),
        "Run every memory-bound and direct kernel on its 64-bit index path (true) or choose by the "
        "tensors' sizes (false, the default): the tests compare both paths' bits.");
  m.def("wide_indices_forced", &convnet::wide_indices_forced);
}
#endif
