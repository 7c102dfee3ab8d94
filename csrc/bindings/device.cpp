// Device memory for the CUDA and emulated backends: Buffer (owning, returned to the caching
// allocator when the last Tensor using it goes away), host<->device and peer copies.
#if !defined(CONVNET_BACKEND_CPU)
#include <pybind11/numpy.h>

#include "device.h"
#include "registry.h"
#include "tensor_arg.h"

namespace py = pybind11;

namespace convnet {
namespace {

// Buffer (the Python type): an owning DeviceBuffer; a Tensor keeps it alive.
using Buffer = DeviceBuffer;

void check_range(const char* op, const Buffer& b, size_t offset, size_t bytes) {
  // Written so that no sum can wrap round: offset and bytes come from the caller.
  CONVNET_CHECK(offset <= b.nbytes && bytes <= b.nbytes - offset,
                op << ": " << bytes << " bytes at offset " << offset
                                               << " exceed the buffer of " << b.nbytes << " bytes");
}

}  // namespace
}  // namespace convnet

CONVNET_BINDINGS(device) {
  using namespace convnet;
  py::class_<Buffer>(m, "Buffer", py::module_local())
      .def(py::init([](size_t nbytes, int dev) {
             check_device_index("Buffer", dev);
             return new Buffer(nbytes, dev);
           }), py::arg("nbytes"), py::arg("device"))
      .def_property_readonly("ptr", [](const Buffer& b) { return uintptr_t(b.ptr); })
      .def_readonly("nbytes", &Buffer::nbytes)
      .def_readonly("device", &Buffer::device);
  m.def("device_count", [] {
    std::string reason;
    int n = device_count(&reason);
    return py::make_tuple(n, reason);
  }, "(count, reason): reason says why count is 0");
  m.def("synchronize", [](int dev) {
    check_device_index("synchronize", dev);
    synchronize(dev);
  }, py::arg("device"));
  m.def("empty_cache", &empty_cache);
  m.def("memory_stats", [](int dev) {
    check_device_index("memory_stats", dev);
    MemoryStats s = memory_stats(dev);
    py::dict d;
    d["in_use"] = s.in_use;
    d["cached"] = s.cached;
    d["peak"] = s.peak;
    d["allocs"] = s.allocs;
    d["cache_hits"] = s.cache_hits;
    return d;
  }, py::arg("device"));
  // Host array -> device buffer at a byte offset.
  m.def("copy_from_host", [](Buffer& dst, size_t offset, py::array src) {
    CONVNET_CHECK(src.flags() & py::array::c_style, "copy_from_host: host array not C-contiguous");
    size_t n = size_t(src.nbytes());
    check_range("copy_from_host", dst, offset, n);
    copy_h2d(static_cast<char*>(dst.ptr) + offset, src.data(), n, dst.device);
  });
  m.def("copy_to_host", [](py::array dst, const Buffer& src, size_t offset) {
    CONVNET_CHECK(dst.flags() & py::array::c_style, "copy_to_host: host array not C-contiguous");
    CONVNET_CHECK(dst.writeable(), "copy_to_host: host array is read-only");
    size_t n = size_t(dst.nbytes());
    check_range("copy_to_host", src, offset, n);
    copy_d2h(dst.mutable_data(), static_cast<const char*>(src.ptr) + offset, n, src.device);
  });
  // Streams and events of the two-device executor (convnet/streams.py); handles are integers.
  auto h = [](void* p) { return uintptr_t(p); };
  auto p = [](uintptr_t v) { return reinterpret_cast<void*>(v); };
  // Handles cannot be checked (an integer that is not one looks like one): only the executor
  // passes them. Device indices are checked.
  m.def("compute_stream", [h](int dev) {
    check_device_index("compute_stream", dev);
    return h(device_stream(dev));
  }, py::arg("device"));
  m.def("copy_stream", [h](int dev) {
    check_device_index("copy_stream", dev);
    return h(copy_stream(dev));
  }, py::arg("device"));
  m.def("event_create", [h](int dev) {
    check_device_index("event_create", dev);
    return h(event_create(dev));
  }, py::arg("device"));
  m.def("event_destroy", [p](uintptr_t e, int dev) { event_destroy(p(e), dev); },
        py::arg("event"), py::arg("device"));
  m.def("event_record", [p](uintptr_t e, uintptr_t s, int dev) { event_record(p(e), p(s), dev); },
        py::arg("event"), py::arg("stream"), py::arg("device"));
  m.def("stream_wait_event", [p](uintptr_t s, uintptr_t e, int dev) {
    stream_wait_event(p(s), p(e), dev);
  }, py::arg("stream"), py::arg("event"), py::arg("device"));
  m.def("stream_synchronize", [p](uintptr_t s, int dev) {
    without_gil([&] { stream_synchronize(p(s), dev); });
  }, py::arg("stream"), py::arg("device"));
  m.def("event_synchronize", [p](uintptr_t e, int dev) {
    without_gil([&] { event_synchronize(p(e), dev); });
  }, py::arg("event"), py::arg("device"));
  m.def("logical_device", [](int physical, int share) { return logical_device(physical, share); },
        py::arg("physical"), py::arg("share"),
        "The logical device index of share `share` of device `physical` (share 0 is the device "
        "itself); created on first request, with its own streams and memory pool.");
  m.def("physical_device", [](int dev) {
    check_device_index("physical_device", dev);
    return physical_device(dev);
  }, py::arg("device"), "The device a logical device index runs on.");
  // A uint8 host array of `nbytes` in pinned memory, given back when the array is collected.
  m.def("pinned_empty", [](size_t nbytes) {
    void* host = host_alloc_pinned(nbytes);
    py::capsule owner(host, [](void* q) {
      try {
        host_free_pinned(q);
      } catch (...) {  // a destructor: nothing to report to
      }
    });
    return py::array_t<uint8_t>({py::ssize_t(nbytes)}, {py::ssize_t(1)},
                                static_cast<uint8_t*>(host), owner);
  }, py::arg("nbytes"));
  // Host array -> device buffer on `stream`, not waited for; the host array must stay untouched
  // until an event recorded after it has completed (pinned memory: truly asynchronous).
  m.def("copy_from_host_async", [p](Buffer& dst, size_t offset, py::array src, uintptr_t stream) {
    CONVNET_CHECK(src.flags() & py::array::c_style,
                  "copy_from_host_async: host array not C-contiguous");
    size_t n = size_t(src.nbytes());
    check_range("copy_from_host_async", dst, offset, n);
    record_stream_use(dst.ptr, dst.device, p(stream));
    copy_h2d_async(static_cast<char*>(dst.ptr) + offset, src.data(), n, dst.device, p(stream));
  }, py::arg("dst"), py::arg("offset"), py::arg("src"), py::arg("stream"));
#if defined(CONVNET_SIMT)
  m.def("set_allocator_checks", &set_allocator_checks, py::arg("cache"), py::arg("hold_back"),
        "Test switches: the caching allocator on (off under emulation), its cross-stream "
        "hold-back off (a planted bug). (False, True) restores both.");
#endif
  m.def("enable_peer_access", [](int a, int b) {
    check_device_index("enable_peer_access", a);
    check_device_index("enable_peer_access", b);
    return enable_peer_access(a, b);
  }, py::arg("a"), py::arg("b"));
  // Asynchronous copy between two buffers on `stream`; both buffers are marked as used by it.
  m.def("copy_device_async", [p](Buffer& dst, size_t dst_off, const Buffer& src, size_t src_off,
                                 size_t n, uintptr_t stream) {
    check_range("copy_device_async", dst, dst_off, n);
    check_range("copy_device_async", src, src_off, n);
    record_stream_use(dst.ptr, dst.device, p(stream));
    record_stream_use(src.ptr, src.device, p(stream));
    copy_peer_async(static_cast<char*>(dst.ptr) + dst_off, dst.device,
                    static_cast<const char*>(src.ptr) + src_off, src.device, n, p(stream));
  }, py::arg("dst"), py::arg("dst_offset"), py::arg("src"), py::arg("src_offset"),
     py::arg("nbytes"), py::arg("stream"));
  // Device -> device, on one device or between two (explicit peer-to-peer copy).
  m.def("copy_device", [](Buffer& dst, size_t dst_off, const Buffer& src, size_t src_off,
                          size_t n) {
    check_range("copy_device", dst, dst_off, n);
    check_range("copy_device", src, src_off, n);
    copy_peer(static_cast<char*>(dst.ptr) + dst_off, dst.device,
              static_cast<const char*>(src.ptr) + src_off, src.device, n);
  });
}
#endif
