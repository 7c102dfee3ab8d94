// Devices, streams, the caching allocator and copies (see csrc/common/device.h).
// Compiled by nvcc for convnet._cuda and by the host compiler against csrc/simt/ for convnet._emu.
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_check.h"
#include "device.h"

namespace convnet {

namespace {

struct Pool {
  std::multimap<size_t, void*> free_blocks;  // size -> block
  std::unordered_map<void*, size_t> sizes;   // every block this pool owns
  MemoryStats stats;
};

std::mutex g_mutex;
std::vector<Pool>& pools() {
  static std::vector<Pool> p(64);
  return p;
}
std::vector<cudaStream_t>& streams() {
  static std::vector<cudaStream_t> s(64, nullptr);
  return s;
}

// Blocks are rounded so that slightly different requests share cached blocks. Under emulation
// nothing is rounded or cached: every tensor is its own allocation with guard zones at its exact
// ends, so an out-of-bounds write by even one float is caught.
#if defined(CONVNET_SIMT)
constexpr bool kCache = false;
size_t round_size(size_t bytes) { return bytes; }
#else
constexpr bool kCache = true;
size_t round_size(size_t bytes) {
  const size_t small = 512, big = size_t(1) << 20;
  if (bytes < big) return (bytes + small - 1) / small * small;
  return (bytes + big - 1) / big * big;
}
#endif

void check_index(int dev) {
  std::string reason;
  int n = device_count(&reason);
  CONVNET_CHECK(n > 0, "no device available: " << reason);
  CONVNET_CHECK(dev >= 0 && dev < n,
                "device index " << dev << " out of range: " << n << " device(s), valid 0.." << n - 1);
}

}  // namespace

int device_count(std::string* reason) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n > 0) return n;
  if (reason) {
    if (e == cudaErrorInsufficientDriver)
      *reason = "no CUDA driver (or the driver is older than this build's CUDA runtime)";
    else if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
      *reason = "a CUDA driver is present but no CUDA device was found";
    else
      *reason = std::string("CUDA runtime error: ") + cudaGetErrorString(e);
  }
  cudaGetLastError();  // clear the sticky error of a failed query
  return 0;
}

void set_device(int dev) {
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur == dev) return;
  check_index(dev);
  CONVNET_CUDA_CHECK(cudaSetDevice(dev));
}

int current_device() {
  int d = 0;
  CONVNET_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void* device_stream(int dev) {
  set_device(dev);
  std::lock_guard<std::mutex> lock(g_mutex);
  cudaStream_t& s = streams().at(size_t(dev));
  if (!s) CONVNET_CUDA_CHECK(cudaStreamCreate(&s));
  return s;
}

void synchronize(int dev) {
  cudaStream_t s = static_cast<cudaStream_t>(device_stream(dev));
  CONVNET_CUDA_CHECK(cudaStreamSynchronize(s));
}

void* device_alloc(size_t bytes, int dev) {
  set_device(dev);
  size_t size = round_size(bytes ? bytes : 1);
  std::lock_guard<std::mutex> lock(g_mutex);
  Pool& pool = pools().at(size_t(dev));
  // Reuse a cached block no more than twice the size asked for.
  auto it = pool.free_blocks.lower_bound(size);
  if (it != pool.free_blocks.end() && it->first <= 2 * size) {
    void* p = it->second;
    size_t got = it->first;
    pool.free_blocks.erase(it);
    pool.stats.cached -= got;
    pool.stats.in_use += got;
    pool.stats.cache_hits++;
    pool.stats.allocs++;
    if (pool.stats.in_use > pool.stats.peak) pool.stats.peak = pool.stats.in_use;
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, size);
  if (e != cudaSuccess) {
    // Give the cached blocks back and try once more before reporting.
    cudaGetLastError();
    for (auto& [sz, blk] : pool.free_blocks) {
      cudaFree(blk);
      pool.sizes.erase(blk);
    }
    pool.free_blocks.clear();
    pool.stats.cached = 0;
    e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
      cudaGetLastError();
      CONVNET_FAIL("out of memory on device " << dev << " allocating " << size << " bytes ("
                                              << pool.stats.in_use << " bytes in use): "
                                              << cudaGetErrorString(e));
    }
  }
  pool.sizes[p] = size;
  pool.stats.in_use += size;
  pool.stats.allocs++;
  if (pool.stats.in_use > pool.stats.peak) pool.stats.peak = pool.stats.in_use;
  return p;
}

void device_free(void* p, int dev) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  Pool& pool = pools().at(size_t(dev));
  auto it = pool.sizes.find(p);
  CONVNET_CHECK(it != pool.sizes.end(), "device_free: pointer not allocated on device " << dev);
  if (!kCache) {
    set_device(dev);
    pool.stats.in_use -= it->second;
    pool.sizes.erase(it);
    CONVNET_CUDA_CHECK(cudaFree(p));
    return;
  }
  pool.free_blocks.emplace(it->second, p);
  pool.stats.in_use -= it->second;
  pool.stats.cached += it->second;
}

void empty_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (size_t d = 0; d < pools().size(); ++d) {
    Pool& pool = pools()[d];
    if (pool.free_blocks.empty()) continue;
    CONVNET_CUDA_CHECK(cudaSetDevice(int(d)));
    for (auto& [sz, blk] : pool.free_blocks) {
      CONVNET_CUDA_CHECK(cudaFree(blk));
      pool.sizes.erase(blk);
    }
    pool.free_blocks.clear();
    pool.stats.cached = 0;
  }
}

MemoryStats memory_stats(int dev) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return pools().at(size_t(dev)).stats;
}

static void copy(void* dst, const void* src, size_t bytes, int dev, cudaMemcpyKind kind) {
  cudaStream_t s = static_cast<cudaStream_t>(device_stream(dev));
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s));
  CONVNET_CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_h2d(void* dst, const void* src, size_t bytes, int dev) {
  copy(dst, src, bytes, dev, cudaMemcpyHostToDevice);
}
void copy_d2h(void* dst, const void* src, size_t bytes, int dev) {
  copy(dst, src, bytes, dev, cudaMemcpyDeviceToHost);
}
void copy_d2d(void* dst, const void* src, size_t bytes, int dev) {
  copy(dst, src, bytes, dev, cudaMemcpyDeviceToDevice);
}

void copy_peer(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes) {
  if (dst_dev == src_dev) return copy_d2d(dst, src, bytes, dst_dev);
  check_index(dst_dev);
  check_index(src_dev);
  static bool enabled[64][64] = {};
  if (!enabled[dst_dev][src_dev]) {
    int can = 0;
    CONVNET_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, dst_dev, src_dev));
    if (can) {
      set_device(dst_dev);
      cudaError_t e = cudaDeviceEnablePeerAccess(src_dev, 0);
      if (e != cudaErrorPeerAccessAlreadyEnabled) CONVNET_CUDA_CHECK(e);
      cudaGetLastError();
    }
    enabled[dst_dev][src_dev] = true;
  }
  // Issued on the source device's stream (its producer), then waited for: the consumer's ops are
  // issued after this returns.
  cudaStream_t s = static_cast<cudaStream_t>(device_stream(src_dev));
  CONVNET_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, bytes, s));
  CONVNET_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace convnet
