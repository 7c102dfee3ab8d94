// Benchmark helpers of the CUDA and emulated backends: event timing, the measured FMA peak, and
// the launch plans variant 0 picks.
#if !defined(CONVNET_BACKEND_CPU)
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "bench_support.h"
#include "check.h"
#include "device.h"
#include "registry.h"

CONVNET_BINDINGS(bench_support) {
  using namespace convnet;
  m.def("time_with_events", [](const std::function<void()>& issue, int repeats, int device) {
    CONVNET_CHECK(repeats >= 1, "time_with_events: repeats must be >= 1, got " << repeats);
    check_device_index("time_with_events", device);
    return time_with_events(device, repeats, issue);
  }, py::arg("issue"), py::arg("repeats"), py::arg("device"),
     "milliseconds of each of `repeats` calls of issue(), measured by CUDA events on the "
     "device's stream");
  m.def("measure_fma_peak", [](int device, int repeats) {
    CONVNET_CHECK(repeats >= 1, "measure_fma_peak: repeats must be >= 1, got " << repeats);
    check_device_index("measure_fma_peak", device);
    return measure_fma_peak_cuda(device, repeats);
  }, py::arg("device"), py::arg("repeats") = 5, "measured FP32 FMA GFLOP/s of the device");
  m.def("sgemm_plan", [](int64_t m, int64_t n, int64_t k, int device) {
    CONVNET_CHECK(m >= 1 && n >= 1 && k >= 1,
                  "sgemm_plan: m, n, k must be >= 1, got " << m << ", " << n << ", " << k);
    check_device_index("sgemm_plan", device);
    return sgemm_plan_cuda(m, n, k, device);
  }, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("device"),
     "what sgemm variant 0 runs for an (m x k) (k x n) product on the device");
  m.def("conv_plan", [](const std::string& op, int channels, int height, int width, int images,
                        int filters, int filter_size, int padding, int stride, int groups,
                        int device) {
    const char* names[] = {"conv_fwd", "conv_bwd_data", "conv_bwd_weights"};
    int which = -1;
    for (int i = 0; i < 3; ++i)
      if (op == names[i]) which = i;
    CONVNET_CHECK(which >= 0, "conv_plan: unknown op '" << op
                                  << "' (conv_fwd, conv_bwd_data, conv_bwd_weights)");
    CONVNET_CHECK(channels > 0 && height > 0 && width > 0 && images > 0 && filters > 0 &&
                      filter_size > 0 && stride > 0 && groups > 0 && channels % groups == 0 &&
                      filters % groups == 0 && padding >= 0 &&
                      filter_size <= int64_t(height) + 2 * int64_t(padding) &&
                      filter_size <= int64_t(width) + 2 * int64_t(padding),
                  "conv_plan: bad shape");
    check_device_index("conv_plan", device);
    ConvParams p;
    p.channels = channels, p.height = height, p.width = width, p.images = images;
    p.filters = filters, p.filter_size = filter_size, p.padding = padding, p.stride = stride;
    p.groups = groups;
    const int64_t out_h = conv_out_size(height, filter_size, padding, stride);
    const int64_t out_w = conv_out_size(width, filter_size, padding, stride);
    CONVNET_CHECK(out_h < (int64_t(1) << 31) && out_w < (int64_t(1) << 31),
                  "conv_plan: output " << out_h << "x" << out_w << " too large");
    p.out_h = int(out_h), p.out_w = int(out_w);
    return conv_plan_cuda(ConvOp(which), p, device);
  }, py::arg("op"), py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("images"),
     py::arg("filters"), py::arg("filter_size"), py::arg("padding"), py::arg("stride"),
     py::arg("groups"), py::arg("device"),
     "what conv variant 0 runs for the layer on the device (tile, blocks, splits, waves)");
}
#endif
