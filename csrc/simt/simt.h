// SIMT emulation: compiles CUDA kernel sources (csrc/cuda/*.cu) as plain C++ and runs them on the CPU.
//
//   g++ -x c++ -include csrc/simt/simt.h -DCONVNET_SIMT -mtls-dialect=gnu2 -std=c++17 ...
//
// Every CUDA thread is a fiber (own 64 KB stack + guard page); the blocks of a grid are spread over
// a few worker OS threads (env CONVNET_EMU_THREADS, default 2), one block at a time per worker.
// Between barriers the runnable threads of a block run in a selectable order (forward, reverse,
// random:seed — env CONVNET_SIMT_ORDER or simt::set_order), so races on shared memory show up as
// results that differ between orders. A thread runs until it blocks (barrier, warp op) or exits;
// a kernel without barriers or warp ops therefore runs its threads one after another on one fiber
// with no context switch at all.
//
// Checked, and reported as simt::Error (a convnet::Error, so RuntimeError in Python) thrown out of
// simt::launch with the kernel name, launch site and the file:line of the offending barrier/op:
//   - __syncthreads reached by only part of the block (early return), or threads waiting at
//     different __syncthreads sites; deadlock;
//   - warp ops (__shfl*_sync, __ballot/__all/__any_sync, __syncwarp) whose mask names lanes that
//     exited, do not exist (partial warp), or wait at another site;
//   - invalid launch configuration (zero dims, > 1024 threads, grid limits, dynamic shared memory
//     above 48 KB, or above the cudaFuncAttributeMaxDynamicSharedMemorySize set for the kernel,
//     capped at 96 KB);
//   - writes past either end of a cudaMalloc'd block (guard zones, checked after every launch, on
//     cudaFree and on simt::check_guards());
//   - any C++ exception thrown inside a kernel.
// Poison: device memory from cudaMalloc, dynamic shared memory and static __shared__ memory (the
// worker's whole TLS block of this module, see runtime.cpp) are filled at allocation / block start
// with the 32-bit pattern 0x7FC0DEAD, a quiet NaN as float (and as double: 0x7FC0DEAD7FC0DEAD), a
// large positive int. Guard zones hold 0x7FF0BAD1 (also a NaN, so reads just past an end show NaN).
//
// Cost (2-core x86-64, measured by simt_selftest("bench") while the machine was busy, so upper
// bounds): a barrier-free kernel costs ~20-30 ns of CPU per CUDA thread (call through the launch
// closure, built-ins read from TLS); each thread's wait at __syncthreads or a warp op costs
// ~80-110 ns of CPU (two fiber switches of 11-17 ns each, the rest is the scheduler and cache
// misses on 256+ fiber stacks). Plus, per block, a refill of all static __shared__ memory of the
// module with poison (CONVNET_SIMT_POISON_SHARED=0 turns that off). Size tests accordingly.
//
// Environment: CONVNET_EMU_THREADS (worker OS threads, default 2), CONVNET_EMU_DEVICES (emulated
// devices, default 2), CONVNET_SIMT_ORDER (forward | reverse | random[:seed], read at the first
// launch), CONVNET_SIMT_STREAMS (sync | deferred | reversed | random[:seed]: how streams run,
// below), CONVNET_SIMT_POISON_SHARED (1 = default).
//
// Not caught: races that give the same result in every order tried (run >= 2 orders; race-free
// kernels are bit-identical across orders, which tests should assert); races and memory-ordering
// bugs between blocks (blocks run concurrently, under the host's strong memory model); reads out
// of bounds (they see NaN close to an allocation, whatever lies there further away); writes out of
// bounds that skip the 256-byte guard zones or land inside another live allocation; out-of-bounds
// accesses to shared memory; kernel access to another device's memory without peer access;
// spin-waits on memory (a thread never yields outside barriers and warp ops: it hangs); a fiber
// stack overflow (64 KB; hits the guard page: SIGSEGV); everything about performance. Within a
// warp there is no lockstep: code relying on implicit warp synchronism without __syncwarp gets
// order-dependent results (which is how such bugs show up). __activemask() returns the lanes that
// have not exited. Streams run their work at once (default) or deferred, in an order the
// emulator chooses (CONVNET_SIMT_STREAMS, below).
//
// Launch: CONVNET_LAUNCH (csrc/cuda/cuda_check.h) calls simt::launch(); kernels must take at least
// one parameter; dynamic shared memory is CONVNET_DYNAMIC_SHARED(T, name), since `extern __shared__`
// cannot be expressed as C++ here.
// Build: -mtls-dialect=gnu2 (many thread_local __shared__ arrays), link -ldl -lpthread; the
// runtime (runtime.cpp) needs glibc's dl_iterate_phdr with dlpi_tls_data to find the shared
// memory section of each worker thread.
#pragma once
#ifndef CONVNET_SIMT
#define CONVNET_SIMT 1
#endif

// Standard headers first: libstdc++ spells __attribute__((__noinline__)), which the CUDA keyword
// macro below would break if these were included after it.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "check.h"

// ---- CUDA keywords ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Static shared memory: one copy per worker OS thread (a worker runs one block at a time), all in
// the TLS section "simt_shared", which the runtime poisons at every block start.
#define __shared__ __attribute__((section("simt_shared"))) static thread_local
// __restrict__ is a GNU keyword already.

// ---- vector types -------------------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct __attribute__((aligned(8))) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(16))) double2 { double x, y; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

// ---- CUDA runtime API subset (runtime.cpp) --------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorPeerAccessAlreadyEnabled = 704,
  cudaErrorPeerAccessNotEnabled = 705,
  cudaErrorLaunchFailure = 719,
  cudaErrorUnknown = 999,
};
typedef cudaError_t cudaError;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
struct CUstream_st;
struct CUevent_st;
typedef CUstream_st* cudaStream_t;
typedef CUevent_st* cudaEvent_t;
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int maxThreadsPerMultiProcessor;
  int multiProcessorCount;
  int major, minor;
  int clockRate;
  int l2CacheSize;
  int unifiedAddressing;
  int canMapHostMemory;
};

const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaMalloc(void** p, size_t bytes);
template <class T> inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = 0);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaMemcpyPeer(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes);
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes,
                                cudaStream_t stream = 0);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDevice(int* dev);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceReset();
cudaError_t cudaDeviceCanAccessPeer(int* can, int dev, int peer);
cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned flags);
cudaError_t cudaDeviceDisablePeerAccess(int peer);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int dev);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaFuncSetAttributeImpl(const void* func, cudaFuncAttribute attr, int value);
template <class F> inline cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttributeImpl(reinterpret_cast<const void*>(func), attr, value);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbol(T& symbol, const void* src, size_t bytes, size_t offset = 0,
                                      cudaMemcpyKind = cudaMemcpyHostToDevice) {
  if (offset + bytes > sizeof(T)) return cudaErrorInvalidValue;
  std::memcpy(reinterpret_cast<char*>(&symbol) + offset, src, bytes);
  return cudaSuccess;
}
template <class T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t bytes, size_t offset = 0,
                                        cudaMemcpyKind = cudaMemcpyDeviceToHost) {
  if (offset + bytes > sizeof(T)) return cudaErrorInvalidValue;
  std::memcpy(dst, reinterpret_cast<const char*>(&symbol) + offset, bytes);
  return cudaSuccess;
}

// ---- emulator API ----------------------------------------------------------------------------------
namespace simt {

// Every failure the emulator reports.
struct Error : convnet::Error {
  using convnet::Error::Error;
};

constexpr uint32_t kPoison = 0x7FC0DEADu;  // fresh device / shared memory (quiet NaN)
constexpr uint32_t kGuard = 0x7FF0BAD1u;   // guard zones around device allocations (NaN)

enum class Order { forward, reverse, random };
void set_order(Order order, uint64_t seed = 0);
void set_order(const std::string& name, uint64_t seed = 0);  // "forward", "reverse", "random[:seed]"
Order order();
uint64_t order_seed();
std::string order_name();  // "forward", "reverse" or "random:<seed>"

// Streams (CONVNET_SIMT_STREAMS, or set_stream_order): `sync` runs every launch, copy and event
// record at once, in issue order. The others queue them on their stream and run them at the next
// synchronisation point (cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, the
// synchronous cudaMemcpy / cudaMemcpyPeer / cudaMemset, an async copy to or from pageable host
// memory, cudaFree, cudaFreeHost, cudaStreamQuery, destroying a stream or an event), constrained
// only by the order within each stream and by events (a wait holds its stream until the record
// it names has run). cudaEventQuery runs nothing: it says cudaErrorNotReady while the event's
// latest record has not run (as on a GPU, where it never blocks). Host memory from cudaHostAlloc /
// cudaMallocHost is pinned: async copies from or to it are queued like kernels; an async copy
// with a pageable host side runs at once, after draining every stream (CUDA stages it through
// a pinned buffer and returns once the host side is no longer needed).
//   deferred        the oldest stream with runnable work first, as far as it can go;
//   reversed        the newest stream first;
//   random[:seed]   a stream chosen at random before every operation.
// Deferred, an invalid launch configuration is reported at the launch, the kernel's own errors
// by the synchronisation that runs it.
enum class StreamOrder { sync, deferred, reversed, random };
void set_stream_order(const std::string& name, uint64_t seed = 0);
std::string stream_order_name();

// Calls that make the host wait for the device, counted since the last reset_host_waits(): what a
// test asserts to show that a training step issues its work without waiting. cudaFree is not
// counted: under emulation every free reaches it (no caching, so that guard zones sit at each
// tensor's ends), where a caching allocator on a GPU keeps the block.
struct HostWaits {
  uint64_t stream_sync;     // cudaStreamSynchronize (and cudaStreamQuery, which drains here)
  uint64_t event_sync;      // cudaEventSynchronize
  uint64_t device_sync;     // cudaDeviceSynchronize
  uint64_t memcpy_sync;     // cudaMemcpy / cudaMemcpyPeer / cudaMemset (synchronous)
  uint64_t pageable_async;  // cudaMemcpyAsync with a pageable (not pinned) host side
};
HostWaits host_waits();
void reset_host_waits();

void poison(void* p, size_t bytes);  // fill with kPoison (e.g. blocks reused by a caching allocator)
void check_guards();                 // throws simt::Error if any live allocation's guard was written
void* dynamic_shared();              // the current block's dynamic shared memory
int num_workers();

struct Stats {
  uint64_t launches, blocks, threads, switches;
  bool static_shared_poisoned;  // the workers found (and poison) the static __shared__ section
};
Stats stats();

namespace detail {
struct Site {
  const char* file;
  int line;
};
// State of the fiber running on this worker OS thread: read by the built-in variables.
struct Cur {
  uint3 tid, bid, bdim, gdim;
  void* dsmem;
};
inline thread_local Cur tl_cur;

enum WarpOp : int { kSyncWarp, kShfl, kShflUp, kShflDown, kShflXor, kBallot, kAll, kAny };
enum BarOp : int { kBar, kBarCount, kBarAnd, kBarOr };
int barrier(const char* file, int line, int op, int pred);
uint64_t warp_op(const char* file, int line, int op, unsigned mask, uint64_t value, int arg,
                 int width);
unsigned active_mask();

struct LaunchInfo {
  const char* file;
  int line;
  const char* name;
  const void* func;
  dim3 grid, block;
  size_t smem;
  void (*thunk)(void*);
  void* closure;
};
void run(const LaunchInfo& info);
void check_launch(const LaunchInfo& info);  // the configuration checks of run(), alone

template <class... P>
struct Closure {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> args;
  static void call(void* c) {
    auto* self = static_cast<Closure*>(c);
    std::apply(self->kernel, self->args);  // each CUDA thread gets its own copy of the parameters
  }
};

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a large type");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <class T>
inline T shfl(const char* file, int line, int op, unsigned mask, T v, int arg, int width = 32) {
  return from_bits<T>(warp_op(file, line, op, mask, to_bits(v), arg, width));
}
inline void syncwarp(const char* file, int line, unsigned mask = 0xffffffffu) {
  warp_op(file, line, kSyncWarp, mask, 0, 0, 32);
}
}  // namespace detail

namespace detail {
bool streams_deferred();
// Queues `work` on `stream` (0: the current device's default stream); `what` names it in errors.
void enqueue(cudaStream_t stream, std::string what, std::function<void()> work);
}  // namespace detail

template <class... P, class... A>
inline void launch(const char* file, int line, const char* name, void (*kernel)(P...), dim3 grid,
                   dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  using C = detail::Closure<P...>;
  if (!detail::streams_deferred()) {
    C c{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    detail::LaunchInfo info{file, line, name, reinterpret_cast<const void*>(kernel), grid, block,
                            smem, &C::call, &c};
    return detail::run(info);
  }
  // Deferred: the configuration is checked and the parameters are copied now, as a CUDA launch
  // does; the kernel runs at the next synchronisation.
  auto c = std::make_shared<C>(C{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)});
  detail::check_launch(detail::LaunchInfo{file, line, name, reinterpret_cast<const void*>(kernel),
                                          grid, block, smem, &C::call, c.get()});
  detail::enqueue(stream, std::string(name) + " (" + file + ":" + std::to_string(line) + ")",
                  [=] {
                    detail::LaunchInfo info{file, line, name, reinterpret_cast<const void*>(kernel),
                                            grid, block, smem, &C::call, c.get()};
                    detail::run(info);
                  });
}

}  // namespace simt

// ---- built-in variables -----------------------------------------------------------------------------
#define threadIdx (static_cast<const ::uint3&>(::simt::detail::tl_cur.tid))
#define blockIdx (static_cast<const ::uint3&>(::simt::detail::tl_cur.bid))
#define blockDim (::dim3(::simt::detail::tl_cur.bdim))
#define gridDim (::dim3(::simt::detail::tl_cur.gdim))
constexpr int warpSize = 32;

// ---- synchronisation and warp intrinsics --------------------------------------------------------------
#define __syncthreads() ((void)::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::kBar, 0))
#define __syncthreads_count(p) ::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::kBarCount, !!(p))
#define __syncthreads_and(p) ::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::kBarAnd, !!(p))
#define __syncthreads_or(p) ::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::kBarOr, !!(p))
#define __syncwarp(...) \
  ((void)::simt::detail::syncwarp(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__))
// (mask, value, lane_or_delta[, width = 32])
#define __shfl_sync(...) ::simt::detail::shfl(__FILE__, __LINE__, ::simt::detail::kShfl, __VA_ARGS__)
#define __shfl_up_sync(...) ::simt::detail::shfl(__FILE__, __LINE__, ::simt::detail::kShflUp, __VA_ARGS__)
#define __shfl_down_sync(...) ::simt::detail::shfl(__FILE__, __LINE__, ::simt::detail::kShflDown, __VA_ARGS__)
#define __shfl_xor_sync(...) ::simt::detail::shfl(__FILE__, __LINE__, ::simt::detail::kShflXor, __VA_ARGS__)
#define __ballot_sync(mask, p) static_cast<unsigned>(::simt::detail::warp_op(__FILE__, __LINE__, ::simt::detail::kBallot, (mask), !!(p), 0, 32))
#define __all_sync(mask, p) static_cast<int>(::simt::detail::warp_op(__FILE__, __LINE__, ::simt::detail::kAll, (mask), !!(p), 0, 32))
#define __any_sync(mask, p) static_cast<int>(::simt::detail::warp_op(__FILE__, __LINE__, ::simt::detail::kAny, (mask), !!(p), 0, 32))
inline unsigned __activemask() { return ::simt::detail::active_mask(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- atomics (real atomics: blocks run concurrently on several OS threads) ----------------------------
#define SIMT_ATOMIC_INT_(T)                                                                       \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }           \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }           \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }         \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }           \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }             \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }           \
  inline T atomicCAS(T* p, T cmp, T v) {                                                          \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);           \
    return cmp;                                                                                   \
  }                                                                                               \
  inline T atomicMax(T* p, T v) {                                                                 \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                 \
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,            \
                                                    __ATOMIC_RELAXED)) {                          \
    }                                                                                             \
    return old;                                                                                   \
  }                                                                                               \
  inline T atomicMin(T* p, T v) {                                                                 \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                 \
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,            \
                                                    __ATOMIC_RELAXED)) {                          \
    }                                                                                             \
    return old;                                                                                   \
  }
SIMT_ATOMIC_INT_(int)
SIMT_ATOMIC_INT_(unsigned)
SIMT_ATOMIC_INT_(unsigned long long)
SIMT_ATOMIC_INT_(long long)
#undef SIMT_ATOMIC_INT_
#define SIMT_ATOMIC_FP_(T, U)                                                                     \
  inline T atomicAdd(T* p, T v) {                                                                 \
    U* q = reinterpret_cast<U*>(p);                                                               \
    U old = __atomic_load_n(q, __ATOMIC_RELAXED), nw;                                             \
    do {                                                                                          \
      T f;                                                                                        \
      std::memcpy(&f, &old, sizeof f);                                                            \
      f += v;                                                                                     \
      std::memcpy(&nw, &f, sizeof f);                                                             \
    } while (!__atomic_compare_exchange_n(q, &old, nw, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)); \
    T r;                                                                                          \
    std::memcpy(&r, &old, sizeof r);                                                              \
    return r;                                                                                     \
  }                                                                                               \
  inline T atomicExch(T* p, T v) {                                                                \
    U b;                                                                                          \
    std::memcpy(&b, &v, sizeof b);                                                                \
    b = __atomic_exchange_n(reinterpret_cast<U*>(p), b, __ATOMIC_RELAXED);                        \
    std::memcpy(&v, &b, sizeof b);                                                                \
    return v;                                                                                     \
  }
SIMT_ATOMIC_FP_(float, uint32_t)
SIMT_ATOMIC_FP_(double, uint64_t)
#undef SIMT_ATOMIC_FP_
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(p, &old, old >= limit ? 0u : old + 1, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return old;
}

// ---- intrinsics ---------------------------------------------------------------------------------------
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; std::memcpy(&x, &i, 8); return x; }
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
inline int __mulhi(int a, int b) { return int((int64_t(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __mul24(int a, int b) { return a * b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
template <class T> inline T __ldg(const T* p) { return *p; }

// min/max as CUDA declares them (global namespace; mixed signed/unsigned picks unsigned).
#define SIMT_MINMAX_(R, A, B)                                      \
  inline R min(A a, B b) { return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); } \
  inline R max(A a, B b) { return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); }
SIMT_MINMAX_(int, int, int)
SIMT_MINMAX_(unsigned, unsigned, unsigned)
SIMT_MINMAX_(unsigned, int, unsigned)
SIMT_MINMAX_(unsigned, unsigned, int)
SIMT_MINMAX_(long, long, long)
SIMT_MINMAX_(unsigned long, unsigned long, unsigned long)
SIMT_MINMAX_(unsigned long, long, unsigned long)
SIMT_MINMAX_(unsigned long, unsigned long, long)
SIMT_MINMAX_(long long, long long, long long)
SIMT_MINMAX_(unsigned long long, unsigned long long, unsigned long long)
SIMT_MINMAX_(unsigned long long, long long, unsigned long long)
SIMT_MINMAX_(unsigned long long, unsigned long long, long long)
#undef SIMT_MINMAX_
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(double a, float b) { return fmax(a, b); }
