// Device memory and streams for the CUDA backend; the same code, compiled against the SIMT
// emulation, serves the emulated devices (emu:N). Implemented in csrc/cuda/device.cu.
// Host code outside csrc/cuda sees only these plain-C++ declarations (no CUDA types).
#pragma once
#include <cstddef>
#include <string>

#include "check.h"

namespace convnet {

// Number of usable (logical) devices; when 0, `reason` says why (no driver / no device / ...).
// Device indices everywhere in this file are logical: index i < (GPUs in the machine) is GPU i;
// logical_device() adds further logical devices that share a GPU, each with its own compute and
// copy streams and its own pool, so a two-device net runs on a machine with one GPU.
int device_count(std::string* reason);
// The logical device that is share `share` of GPU `physical` (share 0: the GPU's own index),
// created on first request; the same arguments give the same index for the whole process.
int logical_device(int physical, int share);
// The GPU a logical device runs on.
int physical_device(int dev);

// Throws ArgError naming `op` unless device `dev` exists (bindings taking a device index).
inline void check_device_index(const char* op, int dev) {
  std::string reason;
  const int n = device_count(&reason);
  CONVNET_CHECK(dev >= 0 && dev < n, op << ": device " << dev << " does not exist ("
                    << (n ? "valid: 0.." + std::to_string(n - 1) : reason) << ")");
}
void set_device(int dev);  // checks the index, names the valid range when wrong
int current_device();
void synchronize(int dev);

// Caching allocator: freed blocks are kept per device and size class and reused, so a training
// step allocates nothing. Under emulation nothing is cached: each block is a fresh NaN-poisoned
// allocation with guard zones at its exact ends.
void* device_alloc(size_t bytes, int dev);
void device_free(void* p, int dev);
void empty_cache();

// Owning device memory from the caching allocator, given back when it goes out of scope (also
// when a launch after the allocation throws). The destructor never throws: a block that cannot
// be given back is simply not cached.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t nbytes = 0;
  int device = 0;
  DeviceBuffer(size_t n, int dev) : ptr(device_alloc(n, dev)), nbytes(n), device(dev) {}
  ~DeviceBuffer() {
    try {
      device_free(ptr, device);
    } catch (...) {
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};
struct MemoryStats {
  size_t in_use = 0, cached = 0, peak = 0;
  size_t allocs = 0, cache_hits = 0;
};
MemoryStats memory_stats(int dev);

void copy_h2d(void* dst, const void* src, size_t bytes, int dev);
void copy_d2h(void* dst, const void* src, size_t bytes, int dev);
void copy_d2d(void* dst, const void* src, size_t bytes, int dev);  // in stream order, no wait
// Explicit peer-to-peer copy between two devices (peer access is enabled on first use when the
// devices support it; otherwise the runtime stages through the host).
void copy_peer(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes);

// The stream every op of this device is issued on (one per device; ops of different devices may
// overlap, ops of one device are ordered). Opaque here: a cudaStream_t.
void* device_stream(int dev);

// The two-device executor (convnet/streams.py). Per device a compute stream (device_stream) and
// a copy stream; an event recorded after a producer and waited on by a consumer's stream orders
// them without the host waiting. Handles are opaque (cudaStream_t, cudaEvent_t).
void* copy_stream(int dev);
void* event_create(int dev);  // timing disabled: for ordering only
void event_destroy(void* event, int dev);
void event_record(void* event, void* stream, int dev);
void stream_wait_event(void* stream, void* event, int dev);
void stream_synchronize(void* stream, int dev);
void event_synchronize(void* event, int dev);  // the host waits for the event's latest record

// Pinned (page-locked) host memory: async copies from it overlap with kernels, where a copy from
// pageable memory makes the host wait. host_free_pinned waits for the copies still using it.
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* p);
// Host -> device copy on `stream`, not waited for (from pinned memory: truly asynchronous).
void copy_h2d_async(void* dst, const void* src, size_t bytes, int dev, void* stream);
// Enables peer access both ways where cudaDeviceCanAccessPeer allows; false when it does not
// (copies between the two are then staged through pinned host memory).
bool enable_peer_access(int a, int b);
// Copy of `bytes` from src_dev to dst_dev issued on `stream` (a stream of src_dev or dst_dev),
// not waited for. Peer to peer where enabled, else two async copies through a pinned host buffer
// owned by that stream (stream order keeps one staged copy from overwriting the last).
void copy_peer_async(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes,
                     void* stream);
// Like PyTorch's record_stream: the block holding `p` (from device_alloc on `dev`) is used by
// work queued on `stream`, so when it is freed the caching allocator keeps it back until that
// work has finished instead of handing it to the next allocation at once.
void record_stream_use(void* p, int dev, void* stream);
#if defined(CONVNET_SIMT)
// Test switches of the emulated backend: turn the caching allocator on (it is off under
// emulation) and its cross-stream hold-back off (a planted bug); (false, true) restores both.
void set_allocator_checks(bool cache, bool hold_back);
#endif

}  // namespace convnet
