// Self-test kernels of the SIMT emulation (built into convnet._emu only; tests/test_simt.py).
// Correct kernels, whose results the tests compare with numpy in every thread order, and kernels
// with planted bugs, which the emulator must report with file:line.
//
// Inputs are computed here and in the test alike: x[i] = float(k) / 7.0f with k = (i * 7919) % 1000.
#if defined(CONVNET_BACKEND_EMU) || defined(CONVNET_SIMT_SELFTEST)
#include <chrono>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "cuda_check.h"

namespace {

// ---- helpers ---------------------------------------------------------------------------------------
float input(int i) { return float((int64_t(i) * 7919) % 1000) / 7.0f; }

template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n;
  explicit DevBuf(size_t count) : n(count) { CONVNET_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T))); }
  DevBuf(const DevBuf&) = delete;
  ~DevBuf() {
    try {
      if (p) cudaFree(p);
    } catch (...) {  // damage was already reported after the launch
    }
  }
  void upload(const std::vector<T>& v) {
    CONVNET_CUDA_CHECK(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> v(n);
    CONVNET_CUDA_CHECK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};

DevBuf<float>* make_input(int n) {
  std::vector<float> h(n);
  for (int i = 0; i < n; ++i) h[i] = input(i);
  auto* d = new DevBuf<float>(size_t(n));
  d->upload(h);
  return d;
}

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ---- correct kernels ---------------------------------------------------------------------------------

// partial[b] = sum of x over block b's 256 elements. Shared-memory tree with barriers.
constexpr int kReduceThreads = 256;
__global__ void block_reduce_kernel(const float* __restrict__ x, int n, float* __restrict__ partial) {
  __shared__ float s[kReduceThreads];
  int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (t < h) s[t] += s[t + h];
    __syncthreads();
  }
  if (t == 0) partial[blockIdx.x] = s[0];
}

// Planted bug: the barrier inside the tree is missing. Forward order gives a wrong sum; reverse
// order happens to give the right one (each thread finishes before the lower ones read its slot).
__global__ void race_reduce_kernel(const float* __restrict__ x, int n, float* __restrict__ partial) {
  __shared__ float s[kReduceThreads];
  int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (t < h) s[t] += s[t + h];
  }
  if (t == 0) partial[blockIdx.x] = s[0];
}

std::vector<double> run_reduce(bool racy) {
  const int n = 1000, blocks = (n + kReduceThreads - 1) / kReduceThreads;
  std::unique_ptr<DevBuf<float>> x(make_input(n));
  DevBuf<float> partial(blocks);
  if (racy)
    CONVNET_LAUNCH(race_reduce_kernel, blocks, kReduceThreads, 0, 0, x->p, n, partial.p);
  else
    CONVNET_LAUNCH(block_reduce_kernel, blocks, kReduceThreads, 0, 0, x->p, n, partial.p);
  return to_double(partial.download());
}

// Warp-shuffle reduction: out[b] = sum of the block's elements; out[blocks + b] = number of
// elements > 70 in the block (ballot + popc), out[2*blocks + b] = __syncthreads_count of the same.
// 96 threads = 3 warps; dynamic shared memory holds one partial per warp.
template <int kThreads>
__global__ void warp_reduce_kernel(const float* __restrict__ x, int n, float* __restrict__ out) {
  CONVNET_DYNAMIC_SHARED(float, warp_sums);
  __shared__ int big_counts[kThreads / 32];
  int t = threadIdx.x, lane = t & 31, warp = t >> 5, i = blockIdx.x * kThreads + t;
  float v = i < n ? x[i] : 0.0f;
  bool big = v > 70.0f;
  unsigned ballot = __ballot_sync(0xffffffffu, big);
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  v = __shfl_sync(0xffffffffu, v, 0);  // broadcast lane 0's total
  if (lane == 0) {
    warp_sums[warp] = v;
    big_counts[warp] = __popc(ballot);
  }
  int count = __syncthreads_count(big);
  if (t == 0) {
    float s = 0.0f;
    int c = 0;
    for (int w = 0; w < kThreads / 32; ++w) s += warp_sums[w], c += big_counts[w];
    out[blockIdx.x] = s;
    out[gridDim.x + blockIdx.x] = float(c);
    out[2 * gridDim.x + blockIdx.x] = float(count);
  }
}

std::vector<double> run_warp_reduce() {
  const int n = 1001, threads = 96, blocks = (n + threads - 1) / threads;
  std::unique_ptr<DevBuf<float>> x(make_input(n));
  DevBuf<float> out(3 * blocks);
  CONVNET_LAUNCH((warp_reduce_kernel<96>), blocks, threads, (threads / 32) * sizeof(float), 0, x->p, n,
                 out.p);
  return to_double(out.download());
}

// Tiled transpose, 32x32 tiles, 32x8 threads: out (w, h) = in (h, w)^T, at odd sizes.
// `edge` = 1 plants an off-by-one at the tile edge (x <= w), writing past the end of `out`.
constexpr int kTile = 32, kRows = 8;
__global__ void transpose_kernel(const float* __restrict__ in, int h, int w, float* __restrict__ out,
                                 int edge) {
  __shared__ float tile[kTile][kTile + 1];
  int x = blockIdx.x * kTile + threadIdx.x, y0 = blockIdx.y * kTile;
  for (int j = threadIdx.y; j < kTile; j += kRows) {
    int y = y0 + j;
    if (x < w + edge && y < h) tile[j][threadIdx.x] = in[y * w + x];
  }
  __syncthreads();
  // out has h columns and w rows
  int ox = y0 + threadIdx.x, oy0 = blockIdx.x * kTile;
  for (int j = threadIdx.y; j < kTile; j += kRows) {
    int oy = oy0 + j;
    if (ox < h && oy < w + edge) out[oy * h + ox] = tile[threadIdx.x][j];
  }
}

std::vector<double> run_transpose(int edge) {
  const int h = 45, w = 37;  // odd; an overrun of one row of out (h floats) stays in the guard zone
  std::unique_ptr<DevBuf<float>> in(make_input(h * w));
  DevBuf<float> out(size_t(h) * w);
  dim3 grid((w + kTile - 1) / kTile, (h + kTile - 1) / kTile), block(kTile, kRows);
  CONVNET_LAUNCH(transpose_kernel, grid, block, 0, 0, in->p, h, w, out.p, edge);
  return to_double(out.download());
}

// Histogram of k = (i * 7919) % 1000 mod 37 over n items: shared-memory atomics, then global.
constexpr int kBins = 37;
__global__ void histogram_kernel(int n, unsigned* __restrict__ hist) {
  __shared__ unsigned local[kBins];
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&local[int((int64_t(i) * 7919) % 1000) % kBins], 1u);
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) atomicAdd(&hist[b], local[b]);
}

std::vector<double> run_histogram() {
  const int n = 5003;
  DevBuf<unsigned> hist(kBins);
  CONVNET_CUDA_CHECK(cudaMemset(hist.p, 0, kBins * sizeof(unsigned)));
  CONVNET_LAUNCH(histogram_kernel, 7, 64, 0, 0, n, hist.p);
  return to_double(hist.download());
}

// Atomics of every kind on global memory, from many blocks at once.
__global__ void atomics_kernel(int* i, unsigned* u, unsigned long long* ull, float* f, double* d) {
  int g = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&i[0], 1);
  atomicSub(&i[1], 2);
  atomicMax(&i[2], g);
  atomicMin(&i[3], -g);
  atomicAdd(&u[0], 3u);
  atomicMax(&u[1], unsigned(g));
  atomicAdd(&ull[0], 5ull);
  atomicAdd(&f[0], 0.5f);
  atomicAdd(&d[0], 0.25);
  int old = atomicCAS(&i[4], g, g + 1);  // a chain: exactly one thread advances each value
  (void)old;
  atomicExch(&i[5], 7);
}

std::vector<double> run_atomics() {
  DevBuf<int> i(6);
  DevBuf<unsigned> u(2);
  DevBuf<unsigned long long> ull(1);
  DevBuf<float> f(1);
  DevBuf<double> d(1);
  i.upload({0, 0, -1, 1, 0, 0});
  u.upload({0, 0});
  ull.upload({0});
  f.upload({0});
  d.upload({0});
  CONVNET_LAUNCH(atomics_kernel, 16, 64, 0, 0, i.p, u.p, ull.p, f.p, d.p);
  std::vector<double> r = to_double(i.download());
  for (double v : to_double(u.download())) r.push_back(v);
  r.push_back(double(ull.download()[0]));
  r.push_back(f.download()[0]);
  r.push_back(d.download()[0]);
  return r;  // [1024, -2048, 1023, -1023, >=1, 7, 3072, 1023, 5120, 512, 256]
}

// ---- planted bugs --------------------------------------------------------------------------------------------

// Off-by-one bounds check: thread n writes one past the end.
__global__ void oob_kernel(float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.0f;
}

// Early return before a barrier.
__global__ void early_return_kernel(const float* x, int n, float* out) {
  __shared__ float s[64];
  int t = threadIdx.x;
  if (t >= n) return;
  s[t] = x[t];
  __syncthreads();
  out[t] = s[(t + 1) % n];
}

// A shuffle whose full mask names lanes that returned already.
__global__ void shfl_exited_kernel(const float* x, float* out) {
  int t = threadIdx.x;
  if (t >= 20) return;
  float v = x[t];
  v += __shfl_down_sync(0xffffffffu, v, 1);
  out[t] = v;
}

// Threads waiting at two different barriers.
__global__ void divergent_barrier_kernel(float* out) {
  int t = threadIdx.x;
  if (t % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[t] = 1.0f;
}

// Half a warp waits in __syncwarp for the other half, which waits at __syncthreads.
__global__ void deadlock_kernel(float* out) {
  int t = threadIdx.x;
  if (t < 16) __syncwarp();
  else __syncthreads();
  out[t] = 1.0f;
}

// Reads shared memory that no thread wrote: block 0 writes all 64 slots, the others only the even
// ones; static and dynamic shared memory are both read back at the odd slots.
__global__ void uninit_shared_kernel(float* out) {
  __shared__ float s[64];
  CONVNET_DYNAMIC_SHARED(float, d);
  int t = threadIdx.x;
  if (blockIdx.x == 0 || t % 2 == 0) s[t] = float(t), d[t] = float(t);
  __syncthreads();
  out[blockIdx.x * 128 + t] = s[t];
  out[blockIdx.x * 128 + 64 + t] = d[t];
}

std::vector<double> run_uninit_shared() {
  const int blocks = 6;
  DevBuf<float> out(blocks * 128);
  CONVNET_LAUNCH(uninit_shared_kernel, blocks, 64, 64 * sizeof(float), 0, out.p);
  std::vector<float> h = out.download();
  std::vector<double> r = to_double(h);
  r.push_back(double(__float_as_uint(h[128 + 1])));  // bit pattern of one poisoned read
  return r;
}

// Never-written device memory reads as NaN too.
__global__ void copy_kernel(const float* in, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

__global__ void throw_kernel(int bad) {
  if (int(threadIdx.x) == bad) CONVNET_CHECK(false, "kernel-side check failed in thread " << bad);
}

// ---- throughput ------------------------------------------------------------------------------------------------
__global__ void saxpy_kernel(int n, float a, const float* __restrict__ x, float* __restrict__ y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
__global__ void barriers_kernel(int rounds, float* out) {
  __shared__ float s[256];
  int t = threadIdx.x;
  float v = float(t);
  for (int r = 0; r < rounds; ++r) {
    s[t] = v;
    __syncthreads();
    v += s[(t + 1) % blockDim.x];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + t] = v;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double cpu_seconds() { return double(std::clock()) / CLOCKS_PER_SEC; }

// [ns per thread of a barrier-free kernel, ns per thread per barrier (wall clock), switches per
//  barrier and thread, workers, the two costs again in CPU time summed over the workers]
// Best of 3 runs each.
std::vector<double> run_bench() {
  const int n = 1 << 20;
  DevBuf<float> x(n), y(n);
  CONVNET_CUDA_CHECK(cudaMemset(x.p, 0, n * sizeof(float)));
  CONVNET_CUDA_CHECK(cudaMemset(y.p, 0, n * sizeof(float)));
  const int blocks = 64, threads = 256, rounds = 50;
  DevBuf<float> out(blocks * threads);
  const double waits = double(blocks) * threads * (2 * rounds);
  double saxpy = 1e30, saxpy_cpu = 1e30, bar = 1e30, bar_cpu = 1e30, switches = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    double c0 = cpu_seconds();
    CONVNET_LAUNCH(saxpy_kernel, n / 256, 256, 0, 0, n, 2.0f, x.p, y.p);
    saxpy = std::min(saxpy, seconds_since(t0) * 1e9 / n);
    saxpy_cpu = std::min(saxpy_cpu, (cpu_seconds() - c0) * 1e9 / n);
    simt::Stats s0 = simt::stats();
    t0 = std::chrono::steady_clock::now();
    c0 = cpu_seconds();
    CONVNET_LAUNCH(barriers_kernel, blocks, threads, 0, 0, rounds, out.p);
    bar = std::min(bar, seconds_since(t0) * 1e9 / waits);
    bar_cpu = std::min(bar_cpu, (cpu_seconds() - c0) * 1e9 / waits);
    simt::Stats s1 = simt::stats();
    switches = double(s1.switches - s0.switches) / waits;
  }
  return {saxpy, bar, switches, double(simt::num_workers()), saxpy_cpu, bar_cpu};
}

// Several emulated devices, peer copies, and the checks on pointers given to the runtime API.
// Returns [device count, 16 values copied 0 -> 1, then error codes of: peer copy naming the
// wrong device, peer copy past the end, cudaFree of device 0's block while device 1 is current,
// cudaFree of a host pointer, cudaFree of an interior pointer, cudaSetDevice(count), H2D copy to
// a host pointer; then 1 if the device name says emulator, event time >= 0].
std::vector<double> run_devices() {
  std::vector<double> r;
  int n = 0;
  CONVNET_CUDA_CHECK(cudaGetDeviceCount(&n));
  r.push_back(n);
  int prev;
  CONVNET_CUDA_CHECK(cudaGetDevice(&prev));
  float *a = nullptr, *b = nullptr;
  std::vector<float> h(16), back(16);
  for (int i = 0; i < 16; ++i) h[i] = float(i) * 1.5f;
  CONVNET_CUDA_CHECK(cudaSetDevice(0));
  CONVNET_CUDA_CHECK(cudaMalloc(&a, 16 * sizeof(float)));
  CONVNET_CUDA_CHECK(cudaMemcpy(a, h.data(), 16 * sizeof(float), cudaMemcpyHostToDevice));
  CONVNET_CUDA_CHECK(cudaSetDevice(1));
  CONVNET_CUDA_CHECK(cudaMalloc(&b, 16 * sizeof(float)));
  cudaStream_t s;
  CONVNET_CUDA_CHECK(cudaStreamCreate(&s));
  CONVNET_CUDA_CHECK(cudaMemcpyPeerAsync(b, 1, a, 0, 16 * sizeof(float), s));
  CONVNET_CUDA_CHECK(cudaStreamSynchronize(s));
  CONVNET_CUDA_CHECK(cudaStreamDestroy(s));
  CONVNET_CUDA_CHECK(cudaMemcpy(back.data(), b, 16 * sizeof(float), cudaMemcpyDeviceToHost));
  for (float v : back) r.push_back(v);
  r.push_back(cudaMemcpyPeer(b, 0, a, 0, 16 * sizeof(float)));
  r.push_back(cudaMemcpyPeer(b, 1, a, 0, 32 * sizeof(float)));
  r.push_back(cudaFree(a));
  r.push_back(cudaFree(h.data()));
  r.push_back(cudaFree(b + 1));
  r.push_back(cudaSetDevice(n));
  r.push_back(cudaMemcpy(back.data(), h.data(), 4, cudaMemcpyHostToDevice));
  cudaGetLastError();
  CONVNET_CUDA_CHECK(cudaFree(b));
  CONVNET_CUDA_CHECK(cudaSetDevice(0));
  CONVNET_CUDA_CHECK(cudaFree(a));
  cudaDeviceProp prop;
  CONVNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, 1));
  r.push_back(std::string(prop.name).find("SIMT emulator") != std::string::npos);
  cudaEvent_t e0, e1;
  CONVNET_CUDA_CHECK(cudaEventCreate(&e0));
  CONVNET_CUDA_CHECK(cudaEventCreate(&e1));
  CONVNET_CUDA_CHECK(cudaEventRecord(e0));
  CONVNET_CUDA_CHECK(cudaEventRecord(e1));
  CONVNET_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = -1;
  CONVNET_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  CONVNET_CUDA_CHECK(cudaEventDestroy(e0));
  CONVNET_CUDA_CHECK(cudaEventDestroy(e1));
  r.push_back(ms >= 0);
  CONVNET_CUDA_CHECK(cudaSetDevice(prev));
  return r;
}

// A runtime-API error surfaces through CONVNET_CUDA_CHECK with the details of the pointer.
std::vector<double> run_bad_copy() {
  std::vector<float> h(4);
  CONVNET_CUDA_CHECK(cudaMemcpy(h.data(), h.data() + 2, 8, cudaMemcpyDeviceToHost));
  return {};
}

}  // namespace

std::vector<std::string> simt_selftest_names() {
  return {"block_reduce", "race_reduce", "warp_reduce", "transpose", "transpose_edge", "histogram",
          "atomics", "oob_write", "early_return", "shfl_exited", "divergent_barrier", "deadlock",
          "uninit_shared", "uninit_global", "exception", "bad_block", "bad_grid", "bad_smem",
          "big_smem", "devices", "bad_copy", "bench"};
}

std::vector<double> simt_selftest(const std::string& name) {
  // On device 0, whatever device the calling thread's last op used (the current device is
  // sticky, as in CUDA): the reports name the device of the damaged allocation.
  CONVNET_CUDA_CHECK(cudaSetDevice(0));
  if (name == "block_reduce") return run_reduce(false);
  if (name == "race_reduce") return run_reduce(true);
  if (name == "warp_reduce") return run_warp_reduce();
  if (name == "transpose") return run_transpose(0);
  if (name == "transpose_edge") return run_transpose(1);
  if (name == "histogram") return run_histogram();
  if (name == "atomics") return run_atomics();
  if (name == "oob_write") {
    const int n = 100;
    DevBuf<float> out(n);
    CONVNET_LAUNCH(oob_kernel, 1, 128, 0, 0, out.p, n);
    return to_double(out.download());
  }
  if (name == "early_return") {
    std::unique_ptr<DevBuf<float>> x(make_input(64));
    DevBuf<float> out(64);
    CONVNET_LAUNCH(early_return_kernel, 1, 64, 0, 0, x->p, 50, out.p);
    return to_double(out.download());
  }
  if (name == "shfl_exited") {
    std::unique_ptr<DevBuf<float>> x(make_input(32));
    DevBuf<float> out(32);
    CONVNET_LAUNCH(shfl_exited_kernel, 1, 32, 0, 0, x->p, out.p);
    return to_double(out.download());
  }
  if (name == "divergent_barrier") {
    DevBuf<float> out(64);
    CONVNET_LAUNCH(divergent_barrier_kernel, 1, 64, 0, 0, out.p);
    return to_double(out.download());
  }
  if (name == "deadlock") {
    DevBuf<float> out(64);
    CONVNET_LAUNCH(deadlock_kernel, 1, 64, 0, 0, out.p);
    return to_double(out.download());
  }
  if (name == "uninit_shared") return run_uninit_shared();
  if (name == "uninit_global") {
    const int n = 77;
    DevBuf<float> in(n), out(n);  // `in` is never written
    CONVNET_LAUNCH(copy_kernel, 2, 64, 0, 0, in.p, out.p, n);
    return to_double(out.download());
  }
  if (name == "exception") {
    CONVNET_LAUNCH(throw_kernel, 2, 32, 0, 0, 5);
    return {};
  }
  if (name == "bad_block") {
    DevBuf<float> out(1);
    CONVNET_LAUNCH(copy_kernel, 1, dim3(32, 33), 0, 0, out.p, out.p, 0);
    return {};
  }
  if (name == "bad_grid") {
    DevBuf<float> out(1);
    CONVNET_LAUNCH(copy_kernel, dim3(0), 32, 0, 0, out.p, out.p, 0);
    return {};
  }
  if (name == "bad_smem") {  // 64 KB of dynamic shared memory without opting in
    DevBuf<float> out(64);
    CONVNET_LAUNCH(uninit_shared_kernel, 1, 64, 64 * 1024, 0, out.p);
    return {};
  }
  if (name == "big_smem") {  // the same after cudaFuncSetAttribute: allowed
    DevBuf<float> out(128);
    CONVNET_CUDA_CHECK(cudaFuncSetAttribute(uninit_shared_kernel,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
    CONVNET_LAUNCH(uninit_shared_kernel, 1, 64, 64 * 1024, 0, out.p);
    return to_double(out.download());
  }
  if (name == "devices") return run_devices();
  if (name == "bad_copy") return run_bad_copy();
  if (name == "bench") return run_bench();
  throw convnet::ArgError("simt_selftest: unknown test '" + name + "'");
}

#endif  // CONVNET_BACKEND_EMU || CONVNET_SIMT_SELFTEST
