// The SIMT emulation's own controls and self-tests (convnet._emu only): thread order between
// barriers, stream order, and simt_selftest(name), which runs a kernel of csrc/simt/selftest.cu.
#if defined(CONVNET_BACKEND_EMU)
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "registry.h"
#include "simt.h"

std::vector<double> simt_selftest(const std::string& name);
std::vector<std::string> simt_selftest_names();

namespace py = pybind11;

namespace {

// A setter's unknown name is the caller's mistake: ValueError (ArgError), not the emulator's
// RuntimeError.
template <class F>
void as_argument_error(F set) {
  try {
    set();
  } catch (const simt::Error& e) {
    throw convnet::ArgError(e.what());
  }
}

}  // namespace

CONVNET_BINDINGS(simt) {
  m.def("set_thread_order",
        [](const std::string& name, uint64_t seed) {
          as_argument_error([&] { simt::set_order(name, seed); });
        },
        py::arg("name"), py::arg("seed") = 0,
        "Order in which runnable emulated threads run between barriers: 'forward', 'reverse' or "
        "'random' (with `seed`, or 'random:SEED'). Default from env CONVNET_SIMT_ORDER.");
  m.def("thread_order", [] { return simt::order_name(); },
        "The current order: 'forward', 'reverse' or 'random:SEED'.");
  m.def("set_stream_order",
        [](const std::string& name, uint64_t seed) {
          as_argument_error([&] { simt::set_stream_order(name, seed); });
        },
        py::arg("name"), py::arg("seed") = 0,
        "How emulated streams run: 'sync' (at once, in issue order), or queued until the next "
        "synchronisation and then 'deferred' (oldest stream first), 'reversed' (newest first) "
        "or 'random' (with `seed`, or 'random:SEED'). Default from env CONVNET_SIMT_STREAMS.");
  m.def("stream_order", [] { return simt::stream_order_name(); });
  m.def("simt_selftest", &simt_selftest, py::arg("name"),
        py::call_guard<py::gil_scoped_release>(),
        "Runs the named self-test kernel of the emulator; returns its results or raises.");
  m.def("simt_selftest_names", &simt_selftest_names);
  m.def("simt_check_guards", [] { simt::check_guards(); },
        "Raises if a guard zone of a live device allocation was overwritten.");
  m.def("simt_stats", [] {
    simt::Stats s = simt::stats();
    py::dict d;
    d["launches"] = s.launches;
    d["blocks"] = s.blocks;
    d["threads"] = s.threads;
    d["switches"] = s.switches;
    d["workers"] = simt::num_workers();
    d["static_shared_poisoned"] = s.static_shared_poisoned;
    return d;
  }, "Counters of the emulator: launches, blocks, threads, fiber switches, worker threads.");
  m.def("host_waits", [] {
    simt::HostWaits w = simt::host_waits();
    py::dict d;
    d["stream_sync"] = w.stream_sync;
    d["event_sync"] = w.event_sync;
    d["device_sync"] = w.device_sync;
    d["memcpy_sync"] = w.memcpy_sync;
    d["pageable_async"] = w.pageable_async;
    return d;
  }, "Calls that made the host wait for an emulated device since reset_host_waits(), by kind: "
     "stream/event/device synchronisations, synchronous copies and memsets, async copies with a "
     "pageable host side (cudaFree is not counted: see csrc/simt/simt.h).");
  m.def("reset_host_waits", [] { simt::reset_host_waits(); });
}
#endif
