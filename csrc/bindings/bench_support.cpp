// Benchmark helpers of the CUDA and emulated backends: event timing and the measured FMA peak.
#if !defined(CONVNET_BACKEND_CPU)
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "bench_support.h"
#include "registry.h"

CONVNET_BINDINGS(bench_support) {
  using namespace convnet;
  m.def("time_with_events", [](const std::function<void()>& issue, int repeats, int device) {
    return time_with_events(device, repeats, issue);
  }, py::arg("issue"), py::arg("repeats"), py::arg("device"),
     "milliseconds of each of `repeats` calls of issue(), measured by CUDA events on the "
     "device's stream");
  m.def("measure_fma_peak", [](int device, int repeats) {
    return measure_fma_peak_cuda(device, repeats);
  }, py::arg("device"), py::arg("repeats") = 5, "measured FP32 FMA GFLOP/s of the device");
}
#endif
