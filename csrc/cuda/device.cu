// Devices, streams, the caching allocator and copies (see csrc/common/device.h).
// Compiled by nvcc for convnet._cuda and by the host compiler against csrc/simt/ for convnet._emu.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda_check.h"
#include "device.h"

namespace convnet {

namespace {

// A freed block that streams other than the compute stream may still be using: it returns to
// free_blocks once every event recorded at free time has completed.
struct Pending {
  void* block;
  size_t size;
  std::vector<cudaEvent_t> events;
};

struct Pool {
  std::multimap<size_t, void*> free_blocks;  // size -> block
  std::unordered_map<void*, size_t> sizes;   // every block this pool owns
  std::unordered_map<void*, std::vector<cudaStream_t>> uses;  // record_stream_use
  std::vector<Pending> pending;
  MemoryStats stats;
};

std::mutex g_mutex;

// Logical devices: index -> physical device. The first physical-count entries are the GPUs
// themselves; logical_device() appends further shares of one GPU (each with its own streams and
// pool), so a two-device net runs on one GPU. Entries never change once set, so readers need no
// lock; g_logical_count is published after its entry.
constexpr int kMaxDevices = 64;
std::atomic<int> g_physical_of[kMaxDevices];
std::atomic<int> g_logical_count{0};
int physical_count(std::string* reason);
thread_local int tl_logical = -1;  // set_device's logical device on this thread

// Test switches (emulation only, through convnet._emu.set_allocator_checks): under emulation the
// caching allocator is off (guard zones at each tensor's exact ends), so its cross-stream hold-back
// would never run; a test turns caching on to exercise it, and turns the hold-back off to plant the
// bug it prevents.
bool g_emu_cache = false;
bool g_hold_back = true;

std::vector<Pool>& pools() {
  static std::vector<Pool> p(64);
  return p;
}
std::vector<cudaStream_t>& streams() {
  static std::vector<cudaStream_t> s(64, nullptr);
  return s;
}
std::vector<cudaStream_t>& copy_streams() {
  static std::vector<cudaStream_t> s(64, nullptr);
  return s;
}

// Moves pending blocks whose streams have finished with them back to free_blocks (lock held).
void reclaim(Pool& pool) {
  for (size_t i = 0; i < pool.pending.size();) {
    Pending& b = pool.pending[i];
    bool done = true;
    for (cudaEvent_t e : b.events) {
      cudaError_t q = cudaEventQuery(e);
      if (q == cudaErrorNotReady) {
        cudaGetLastError();
        done = false;
        break;
      }
      CONVNET_CUDA_CHECK(q);
    }
    if (!done) {
      ++i;
      continue;
    }
    for (cudaEvent_t e : b.events) cudaEventDestroy(e);
    pool.free_blocks.emplace(b.size, b.block);
    pool.pending[i] = pool.pending.back();
    pool.pending.pop_back();
  }
}

// Blocks are rounded so that slightly different requests share cached blocks. Under emulation
// nothing is rounded or cached (unless a test asks): every tensor is its own allocation with guard
// zones at its exact ends, so an out-of-bounds write by even one float is caught.
#if defined(CONVNET_SIMT)
bool caching() { return g_emu_cache; }
size_t round_size(size_t bytes) { return bytes; }
#else
bool caching() { return true; }
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

// The GPUs of the machine (0 with `reason` when there are none); fills the identity entries of
// the logical table on first success.
int physical_count(std::string* reason) {
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

}  // namespace

int device_count(std::string* reason) {
  const int n = physical_count(reason);
  if (n == 0) return 0;
  int logical = g_logical_count.load();
  if (logical == 0) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_logical_count.load() == 0) {
      for (int d = 0; d < n && d < kMaxDevices; ++d) g_physical_of[d] = d;
      g_logical_count = std::min(n, kMaxDevices);
    }
    logical = g_logical_count.load();
  }
  return logical;
}

int physical_device(int dev) {
  check_index(dev);
  return g_physical_of[dev].load();
}

int logical_device(int physical, int share) {
  std::string reason;
  const int n = physical_count(&reason);
  CONVNET_CHECK(n > 0, "no device available: " << reason);
  CONVNET_CHECK(physical >= 0 && physical < n, "device " << physical << " does not exist: " << n
                    << " device(s), valid 0.." << n - 1);
  CONVNET_CHECK(share >= 0, "logical_device: share " << share << " is negative");
  device_count(nullptr);  // the identity entries first
  std::lock_guard<std::mutex> lock(g_mutex);
  int seen = 0;
  const int count = g_logical_count.load();
  for (int d = 0; d < count; ++d)
    if (g_physical_of[d].load() == physical && seen++ == share) return d;
  // Shares 0..seen-1 exist: append the missing ones.
  CONVNET_CHECK(count + (share - seen) < kMaxDevices,
                "logical_device: at most " << kMaxDevices << " logical devices");
  int d = count;
  for (; seen <= share; ++seen, ++d) g_physical_of[d] = physical;
  g_logical_count = d;
  return d - 1;
}

void set_device(int dev) {
  int cur = -1;
  // Fast path: this logical device is current, and no direct cudaSetDevice has moved the thread
  // to another GPU since (enable_peer_access does).
  if (tl_logical == dev && cudaGetDevice(&cur) == cudaSuccess &&
      cur == g_physical_of[dev].load())
    return;
  const int physical = physical_device(dev);
  CONVNET_CUDA_CHECK(cudaSetDevice(physical));
  tl_logical = dev;
}

int current_device() {
  int d = 0;
  CONVNET_CUDA_CHECK(cudaGetDevice(&d));
  // The logical device set last on this thread, while the GPU is still its own.
  if (tl_logical >= 0 && g_physical_of[tl_logical].load() == d) return tl_logical;
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
  if (!pool.pending.empty()) reclaim(pool);
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
  auto used = pool.uses.find(p);
  std::vector<cudaStream_t> streams_using;
  if (used != pool.uses.end()) {
    streams_using = std::move(used->second);
    pool.uses.erase(used);
  }
  if (!caching()) {
    // Uncached blocks go back to the runtime, whose cudaFree waits for the device.
    set_device(dev);
    pool.stats.in_use -= it->second;
    pool.sizes.erase(it);
    CONVNET_CUDA_CHECK(cudaFree(p));
    return;
  }
  pool.stats.in_use -= it->second;
  pool.stats.cached += it->second;
  if (!streams_using.empty() && g_hold_back) {
    set_device(dev);
    Pending b{p, it->second, {}};
    for (cudaStream_t s : streams_using) {
      cudaEvent_t e;
      CONVNET_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      CONVNET_CUDA_CHECK(cudaEventRecord(e, s));
      b.events.push_back(e);
    }
    pool.pending.push_back(std::move(b));
    return;
  }
  pool.free_blocks.emplace(it->second, p);
}

void record_stream_use(void* p, int dev, void* stream) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Pool& pool = pools().at(size_t(dev));
  CONVNET_CHECK(pool.sizes.count(p), "record_stream_use: pointer not allocated on device " << dev);
  auto& list = pool.uses[p];
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (std::find(list.begin(), list.end(), s) == list.end()) list.push_back(s);
}

void empty_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (size_t d = 0; d < pools().size(); ++d) {
    Pool& pool = pools()[d];
    if (pool.free_blocks.empty()) continue;
    set_device(int(d));
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
// Within one device the copy is ordered with every op by the device's stream: the host does not
// wait for it (a later host read waits, being a synchronous copy_d2h).
void copy_d2d(void* dst, const void* src, size_t bytes, int dev) {
  cudaStream_t s = static_cast<cudaStream_t>(device_stream(dev));
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
}

bool enable_peer_access(int a_logical, int b_logical) {
  const int a = physical_device(a_logical), b = physical_device(b_logical);
  if (a == b) return true;  // two logical devices on one GPU
  static int state[64][64] = {};  // 0 not asked yet, 1 enabled, 2 unavailable
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto [from, to] : {std::pair<int, int>{a, b}, std::pair<int, int>{b, a}}) {
    if (state[from][to]) continue;
    int can = 0;
    CONVNET_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, from, to));
    state[from][to] = 2;
    if (!can) continue;
    CONVNET_CUDA_CHECK(cudaSetDevice(from));
    cudaError_t e = cudaDeviceEnablePeerAccess(to, 0);
    if (e != cudaErrorPeerAccessAlreadyEnabled) CONVNET_CUDA_CHECK(e);
    cudaGetLastError();
    state[from][to] = 1;
  }
  return state[a][b] == 1 && state[b][a] == 1;
}

void copy_peer(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes) {
  if (dst_dev == src_dev) return copy_d2d(dst, src, bytes, dst_dev);
  enable_peer_access(dst_dev, src_dev);
  // Issued on the source device's stream (its producer), then waited for: the consumer's ops are
  // issued after this returns.
  cudaStream_t s = static_cast<cudaStream_t>(device_stream(src_dev));
  CONVNET_CUDA_CHECK(cudaMemcpyPeerAsync(dst, physical_device(dst_dev), src,
                                         physical_device(src_dev), bytes, s));
  CONVNET_CUDA_CHECK(cudaStreamSynchronize(s));
}

void* copy_stream(int dev) {
  set_device(dev);
  std::lock_guard<std::mutex> lock(g_mutex);
  cudaStream_t& s = copy_streams().at(size_t(dev));
  if (!s) CONVNET_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void* event_create(int dev) {
  set_device(dev);
  cudaEvent_t e;
  CONVNET_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void event_destroy(void* event, int dev) {
  set_device(dev);
  CONVNET_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
}

void event_synchronize(void* event, int dev) {
  set_device(dev);
  CONVNET_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
}

void event_record(void* event, void* stream, int dev) {
  set_device(dev);
  CONVNET_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event),
                                     static_cast<cudaStream_t>(stream)));
}

void stream_wait_event(void* stream, void* event, int dev) {
  set_device(dev);
  CONVNET_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream),
                                         static_cast<cudaEvent_t>(event), 0));
}

void stream_synchronize(void* stream, int dev) {
  set_device(dev);
  CONVNET_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void copy_peer_async(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes,
                     void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int dst_gpu = physical_device(dst_dev), src_gpu = physical_device(src_dev);
  if (dst_gpu == src_gpu) {  // one GPU (two logical devices on it, or one device)
    CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    return;
  }
  if (enable_peer_access(dst_dev, src_dev)) {
    CONVNET_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_gpu, src, src_gpu, bytes, s));
    return;
  }
  // Host-staged: one pinned buffer per stream, grown when needed. The two copies and the next
  // staged copy on this stream are ordered by the stream, so the buffer is never overwritten
  // while it is still being read; growing it waits for the stream first.
  struct Staging {
    void* host = nullptr;
    size_t bytes = 0;
  };
  static std::unordered_map<cudaStream_t, Staging> staging;
  Staging* st;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    st = &staging[s];
  }
  if (st->bytes < bytes) {
    CONVNET_CUDA_CHECK(cudaStreamSynchronize(s));
    if (st->host) CONVNET_CUDA_CHECK(cudaFreeHost(st->host));
    st->host = nullptr;
    st->bytes = 0;
    CONVNET_CUDA_CHECK(cudaMallocHost(&st->host, bytes));
    st->bytes = bytes;
  }
  set_device(src_dev);
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(st->host, src, bytes, cudaMemcpyDeviceToHost, s));
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, st->host, bytes, cudaMemcpyHostToDevice, s));
}

void* host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
  if (e == cudaErrorMemoryAllocation) {  // MemoryError in Python, as for any host allocation
    cudaGetLastError();
    throw std::bad_alloc();
  }
  CONVNET_CUDA_CHECK(e);
  return p;
}

void host_free_pinned(void* p) { CONVNET_CUDA_CHECK(cudaFreeHost(p)); }

void copy_h2d_async(void* dst, const void* src, size_t bytes, int dev, void* stream) {
  set_device(dev);
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
                                     static_cast<cudaStream_t>(stream)));
}

#if defined(CONVNET_SIMT)
void set_allocator_checks(bool cache, bool hold_back) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_emu_cache = cache;
    g_hold_back = hold_back;
  }
  if (!cache) empty_cache();
}
#endif

}  // namespace convnet
