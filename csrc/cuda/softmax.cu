// Softmax and logistic-regression cost on the GPU (declared in csrc/common/softmax.h).
//
// Column kernels (softmax forward/backward, the fused cost, logreg forward): x (K, N) with image n
// the column x[k * N + n]. A block is 32 threads x 16 class slices: threadIdx.x = image (or 4
// consecutive images, one float4: see the kernels; coalesced either way), threadIdx.y = slice, which walks classes
// k = y, y + 16, ... keeping running per-image values (max and rescaled sum of exponentials, count
// above the label). Slice 0 combines the 16 partial results in a fixed order through shared
// memory (deterministic), then every thread writes its classes.
// Row kernels (the two cost gradients): 256 consecutive images (or groups of 4 images, float4)
// per block in x, classes over blockIdx.y (grid-stride), so each thread reads its image's label
// once.
// Labels outside [0, K) are recorded in a device flag (atomicMin of the image index, so the
// lowest bad image is reported whatever the schedule); the launcher reads it back and throws.
#include <cfloat>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <vector>

#include "cuda_check.h"
#include "grid_stride.cuh"
#include "index_width.cuh"
#include "lanes.cuh"
#include "softmax.h"

namespace convnet {
namespace {

constexpr int kImages = 32, kSlices = 16;

template <class I>
__device__ __forceinline__ bool bad_label(int32_t label, I K) {
  return label < 0 || label >= K;
}

// The labels of L consecutive images: one int4 load for L = 4 (16-byte aligned), else one int.
template <int L>
__device__ __forceinline__ void load_labels(const int32_t* p, int32_t* lab) {
  if constexpr (L == 4) {
    const int4 q = *reinterpret_cast<const int4*>(p);
    lab[0] = q.x, lab[1] = q.y, lab[2] = q.z, lab[3] = q.w;
  } else {
    lab[0] = *p;
  }
}

// Column kernels: L consecutive images per thread (lanes.cuh): L = 4 (float4 loads and stores)
// when N % 4 == 0 and the column buffers are 16-byte aligned (the labels too, read as one int4),
// else 1; a block covers 32 x L images. Each lane does its image's float operations in the same
// order on both paths (the same slices, the same combination), so both give the same bits. I:
// the index type (index_width.cuh); a thread's offset steps by kSlices*N per class slice.

// Softmax of a column (+ with labels: nll, rank). nll/rank/labels/flag are null without labels.
// The explicit 2 blocks/SM: with the bound alone, ptxas for sm_100 caps the labelled kernel at 32
// registers and spills; with it, it takes 51 and spills nothing.
template <bool kLabels, int L, class I>
__global__ void __launch_bounds__(kImages * kSlices, 2)
softmax_fwd_kernel(const float* x, const int32_t* labels, float* probs, float* nll,
                   int32_t* rank, I K, I N, int* flag) {
  using V = Lanes<L>;
  __shared__ float sm_m[kSlices][kImages * L], sm_s[kSlices][kImages * L];
  __shared__ int32_t sm_c[kSlices][kImages * L];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const I n = (I(blockIdx.x) * kImages + tx) * L;
  const bool valid = n < N;
  bool bad[L];
  float xl[L];
#pragma unroll
  for (int l = 0; l < L; ++l) bad[l] = false, xl[l] = 0.f;
  if (kLabels && valid) {
    int32_t lab[L];
    load_labels<L>(labels + n, lab);
#pragma unroll
    for (int l = 0; l < L; ++l) {
      bad[l] = bad_label(lab[l], K);
      if (bad[l] && ty == 0) atomicMin(flag, int(n + l));
      xl[l] = bad[l] ? 0.f : x[I(lab[l]) * N + (n + l)];
    }
  }
  // Online: s = sum over the slice of e^(x - m), rescaled whenever the maximum m grows.
  float m[L], s[L];
  int32_t c[L];
#pragma unroll
  for (int l = 0; l < L; ++l) m[l] = -INFINITY, s[l] = 0.f, c[l] = 0;
  const I step = I(kSlices) * N;
  if (valid) {
    I o = I(ty) * N + n;
    for (I k = ty; k < K; k += kSlices, o += step) {
      const V v = V::load(x + o);
#pragma unroll
      for (int l = 0; l < L; ++l) {
        if (v.v[l] > m[l]) {
          s[l] = (m[l] == -INFINITY ? 0.f : s[l] * expf(m[l] - v.v[l])) + 1.f;
          m[l] = v.v[l];
        } else {
          s[l] += expf(v.v[l] - m[l]);
        }
        if (kLabels) c[l] += v.v[l] > xl[l];
      }
    }
  }
#pragma unroll
  for (int l = 0; l < L; ++l) {
    sm_m[ty][tx * L + l] = m[l];
    sm_s[ty][tx * L + l] = s[l];
    sm_c[ty][tx * L + l] = c[l];
  }
  __syncthreads();
  if (ty == 0) {
#pragma unroll
    for (int l = 0; l < L; ++l) {
      const int t = tx * L + l;
      float M = -INFINITY;
      for (int j = 0; j < kSlices; ++j) M = fmaxf(M, sm_m[j][t]);
      float S = 0.f;
      int32_t C = 0;
      for (int j = 0; j < kSlices; ++j) {
        if (sm_m[j][t] != -INFINITY) S += sm_s[j][t] * expf(sm_m[j][t] - M);
        C += sm_c[j][t];
      }
      sm_m[0][t] = M;
      sm_s[0][t] = S;
      if (kLabels && valid) {
        nll[n + l] = bad[l] ? 0.f : M + logf(S) - xl[l];
        rank[n + l] = C;
      }
    }
  }
  __syncthreads();
  if (valid) {
    float M[L], inv[L];
#pragma unroll
    for (int l = 0; l < L; ++l) M[l] = sm_m[0][tx * L + l], inv[l] = 1.f / sm_s[0][tx * L + l];
    I o = I(ty) * N + n;
    for (I k = ty; k < K; k += kSlices, o += step) {
      V v = V::load(x + o);
#pragma unroll
      for (int l = 0; l < L; ++l) v.v[l] = expf(v.v[l] - M[l]) * inv[l];
      v.store(probs + o);
    }
  }
}

template <int L, class I>
__global__ void __launch_bounds__(kImages * kSlices)
softmax_bwd_kernel(const float* p, const float* dp, float* dx, I K, I N, bool accumulate) {
  using V = Lanes<L>;
  __shared__ float sm_d[kSlices][kImages * L];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const I n = (I(blockIdx.x) * kImages + tx) * L;
  const bool valid = n < N;
  const I step = I(kSlices) * N;
  float d[L];
#pragma unroll
  for (int l = 0; l < L; ++l) d[l] = 0.f;
  if (valid) {
    I o = I(ty) * N + n;
    for (I k = ty; k < K; k += kSlices, o += step) {
      const V pv = V::load(p + o), dv = V::load(dp + o);
#pragma unroll
      for (int l = 0; l < L; ++l) d[l] += pv.v[l] * dv.v[l];
    }
  }
#pragma unroll
  for (int l = 0; l < L; ++l) sm_d[ty][tx * L + l] = d[l];
  __syncthreads();
  if (ty == 0) {
#pragma unroll
    for (int l = 0; l < L; ++l) {
      float D = 0.f;
      for (int j = 0; j < kSlices; ++j) D += sm_d[j][tx * L + l];
      sm_d[0][tx * L + l] = D;
    }
  }
  __syncthreads();
  if (valid) {
    float D[L];
#pragma unroll
    for (int l = 0; l < L; ++l) D[l] = sm_d[0][tx * L + l];
    I o = I(ty) * N + n;
    for (I k = ty; k < K; k += kSlices, o += step) {
      const V pv = V::load(p + o), dv = V::load(dp + o);
      V g = accumulate ? V::load(dx + o) : V::fill(0.f);
#pragma unroll
      for (int l = 0; l < L; ++l) {
        const float gl = pv.v[l] * (dv.v[l] - D[l]);
        g.v[l] = accumulate ? g.v[l] + gl : gl;
      }
      g.store(dx + o);
    }
  }
}

template <int L, class I>
__global__ void __launch_bounds__(kImages * kSlices)
logreg_fwd_kernel(const float* p, const int32_t* labels, float* nll, int32_t* rank, I K, I N,
                  int* flag) {
  using V = Lanes<L>;
  __shared__ int32_t sm_c[kSlices][kImages * L];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const I n = (I(blockIdx.x) * kImages + tx) * L;
  const bool valid = n < N;
  bool bad[L];
  float pl[L];
  int32_t c[L];
#pragma unroll
  for (int l = 0; l < L; ++l) bad[l] = false, pl[l] = 0.f, c[l] = 0;
  if (valid) {
    int32_t lab[L];
    load_labels<L>(labels + n, lab);
#pragma unroll
    for (int l = 0; l < L; ++l) {
      bad[l] = bad_label(lab[l], K);
      if (bad[l] && ty == 0 && flag) atomicMin(flag, int(n + l));  // logreg_record: no flag
      pl[l] = bad[l] ? 0.f : p[I(lab[l]) * N + (n + l)];
    }
    const I step = I(kSlices) * N;
    I o = I(ty) * N + n;
    for (I k = ty; k < K; k += kSlices, o += step) {
      const V v = V::load(p + o);
#pragma unroll
      for (int l = 0; l < L; ++l) c[l] += v.v[l] > pl[l];
    }
  }
#pragma unroll
  for (int l = 0; l < L; ++l) sm_c[ty][tx * L + l] = c[l];
  __syncthreads();
  if (ty == 0 && valid) {
#pragma unroll
    for (int l = 0; l < L; ++l) {
      int32_t C = 0;
      for (int j = 0; j < kSlices; ++j) C += sm_c[j][tx * L + l];
      nll[n + l] = bad[l] ? 0.f : -logf(fmaxf(pl[l], FLT_MIN));
      rank[n + l] = C;
    }
  }
}

// The sums of one batch into its record: one thread walks the images in order and adds in double
// precision, exactly as sum_cost does on the host (a few microseconds for a batch of 128, and the
// same bits as the host sum), and notes the first bad label.
template <class I>
__global__ void cost_record_kernel(const float* nll, const int32_t* rank, const int32_t* labels,
                                   I K, I N, CostRecord* record) {
  CostRecord r{0.0, 0, 0, -1, 0};
  for (I n = 0; n < N; ++n) {
    if (bad_label(labels[n], K)) {
      r = CostRecord{0.0, 0, 0, int64_t(n), labels[n]};
      break;
    }
    r.logprob += double(nll[n]);
    r.top1 += rank[n] >= 1;
    r.top5 += rank[n] >= 5;
  }
  *record = r;
}

// kLogreg = false: dx = scale * (p - onehot)   (fused softmax + cost)
// kLogreg = true:  dp = -scale / max(p, FLT_MIN) at the label, 0 elsewhere
// L consecutive images per thread (lanes.cuh): L = 4 (float4 loads and stores, the labels as one
// int4) when N % 4 == 0 and probs, dx and labels are 16-byte aligned, else 1; the same bits.
template <int L, bool kLogreg, class I>
__global__ void cost_bwd_kernel(const float* p, const int32_t* labels, float scale, float* dx,
                                I K, I N, bool accumulate, int* flag) {
  using V = Lanes<L>;
  const I n = (I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x)) * L;
  if (n >= N) return;
  int32_t lab[L];
  load_labels<L>(labels + n, lab);
  if (flag && blockIdx.y == 0) {
#pragma unroll
    for (int l = 0; l < L; ++l)
      if (bad_label(lab[l], K)) atomicMin(flag, int(n + l));
  }
  const I step = I(gridDim.y) * N;
  I i = I(blockIdx.y) * N + n;
  for (I k = blockIdx.y; k < K; k += I(gridDim.y), i += step) {
    const V pv = V::load(p + i);
    V g = accumulate ? V::load(dx + i) : V::fill(0.f);
#pragma unroll
    for (int l = 0; l < L; ++l) {
      float gl;
      if (kLogreg)
        gl = k == lab[l] ? -scale / fmaxf(pv.v[l], FLT_MIN) : 0.f;
      else
        gl = scale * (pv.v[l] - (k == lab[l] ? 1.f : 0.f));
      g.v[l] = accumulate ? g.v[l] + gl : gl;
    }
    g.store(dx + i);
  }
}

__global__ void set_flag_kernel(int* flag) { *flag = INT_MAX; }

// The bad-label flag of one launch: a device int, INT_MAX when every label is good.
class LabelFlag {
 public:
  LabelFlag() : buf_(sizeof(int), current_device()) {
    CONVNET_LAUNCH(set_flag_kernel, 1, 1, 0, current_stream(), get());
  }
  int* get() { return buf_.as<int>(); }
  // Waits for the launches before it (the copy is ordered on the device's stream).
  void check(const char* op, const int32_t* labels, int64_t K) {
    int bad = INT_MAX;
    copy_d2h(&bad, buf_.ptr, sizeof(int), buf_.device);
    if (bad == INT_MAX) return;
    int32_t label = 0;
    copy_d2h(&label, labels + bad, sizeof(int32_t), buf_.device);
    throw_bad_label(op, bad, label, K);
  }

 private:
  DeviceBuffer buf_;
};

// Per-image nll (N floats) then rank (N int32) of one cost launch in one device allocation,
// copied back in one transfer and summed on the host in image order (deterministic).
class CostScratch {
 public:
  explicit CostScratch(int64_t images)
      : n_(images), buf_(size_t(images) * 8, current_device()) {}
  float* nll() { return buf_.as<float>(); }
  int32_t* rank() { return reinterpret_cast<int32_t*>(buf_.as<char>() + size_t(n_) * 4); }
  // Waits for the launches before it (the copy is ordered on the device's stream).
  SoftmaxCost sums() {
    std::vector<char> host(buf_.nbytes);
    copy_d2h(host.data(), buf_.ptr, host.size(), buf_.device);
    std::vector<float> host_nll(static_cast<size_t>(n_));
    std::vector<int32_t> host_rank(static_cast<size_t>(n_));
    std::memcpy(host_nll.data(), host.data(), size_t(n_) * 4);
    std::memcpy(host_rank.data(), host.data() + size_t(n_) * 4, size_t(n_) * 4);
    return sum_cost(host_nll.data(), host_rank.data(), n_);
  }

 private:
  int64_t n_;
  DeviceBuffer buf_;
};

// Blocks of 32 x lanes images over N.
unsigned column_blocks(int64_t N, int lanes) {
  return unsigned((N + kImages * lanes - 1) / (kImages * lanes));
}
const dim3 kColumnBlock(kImages, kSlices);

// 4 images a thread when N % 4 == 0 and every buffer is 16-byte aligned, else 1.
int lanes_for(int64_t N, std::initializer_list<const void*> buffers) {
  if (N % 4 != 0) return 1;
  for (const void* b : buffers)
    if (!aligned16(b)) return 1;
  return 4;
}

// Offsets a (K, N) launch forms: up to K*N plus a step of up to 1024 classes past the last
// (the cost gradients' grid-stride over classes; kSlices for the column kernels).
int64_t column_span(const SoftmaxParams& p) { return (p.classes + 1024) * p.images + 4; }

// Calls launch(lanes, index) for the launch's path: lanes as std::integral_constant<int, L>.
template <class F>
void with_path(const SoftmaxParams& p, int lanes, F&& launch) {
  with_index(column_span(p), [&](auto index) {
    if (lanes == 4)
      launch(std::integral_constant<int, 4>(), index);
    else
      launch(std::integral_constant<int, 1>(), index);
  });
}

template <bool kLogreg>
void cost_bwd(const char* op, const SoftmaxParams& p, const float* probs, const int32_t* labels,
              float scale, float* dx, bool accumulate) {
  if (p.images == 0) return;
  const int threads = 256;
  const int lanes = lanes_for(p.images, {probs, dx, labels});
  dim3 grid(unsigned((p.images / lanes + threads - 1) / threads),
            unsigned(p.classes < 1024 ? p.classes : 1024));
  // Labels checked by the caller (the net checks them on the host before a step): no flag to
  // read back, so no host wait.
  std::optional<LabelFlag> flag;
  int* flag_ptr = nullptr;
  if (!p.labels_checked) flag_ptr = flag.emplace().get();
  with_path(p, lanes, [&](auto lanes_c, auto index) {
    using I = decltype(index);
    CONVNET_LAUNCH((cost_bwd_kernel<decltype(lanes_c)::value, kLogreg, I>), grid, threads, 0,
                   current_stream(), probs, labels, scale, dx, I(p.classes), I(p.images),
                   accumulate, flag_ptr);
  });
  if (flag) flag->check(op, labels, p.classes);
}

}  // namespace

void softmax_fwd_cuda(const SoftmaxParams& p, const float* x, float* probs) {
  if (p.images == 0) return;
  const int lanes = lanes_for(p.images, {x, probs});
  with_path(p, lanes, [&](auto lanes_c, auto index) {
    using I = decltype(index);
    CONVNET_LAUNCH((softmax_fwd_kernel<false, decltype(lanes_c)::value, I>),
                   column_blocks(p.images, lanes), kColumnBlock, 0, current_stream(), x, nullptr,
                   probs, nullptr, nullptr, I(p.classes), I(p.images), nullptr);
  });
}

void softmax_bwd_cuda(const SoftmaxParams& p, const float* probs, const float* dprobs, float* dx,
                      bool accumulate) {
  if (p.images == 0) return;
  const int lanes = lanes_for(p.images, {probs, dprobs, dx});
  with_path(p, lanes, [&](auto lanes_c, auto index) {
    using I = decltype(index);
    CONVNET_LAUNCH((softmax_bwd_kernel<decltype(lanes_c)::value, I>),
                   column_blocks(p.images, lanes), kColumnBlock, 0, current_stream(), probs,
                   dprobs, dx, I(p.classes), I(p.images), accumulate);
  });
}

SoftmaxCost softmax_xent_fwd_cuda(const SoftmaxParams& p, const float* x, const int32_t* labels,
                                  float* probs) {
  if (p.images == 0) return {};
  LabelFlag flag;
  CostScratch cost(p.images);
  const int lanes = lanes_for(p.images, {x, probs, labels});
  with_path(p, lanes, [&](auto lanes_c, auto index) {
    using I = decltype(index);
    CONVNET_LAUNCH((softmax_fwd_kernel<true, decltype(lanes_c)::value, I>),
                   column_blocks(p.images, lanes), kColumnBlock, 0, current_stream(), x, labels,
                   probs, cost.nll(), cost.rank(), I(p.classes), I(p.images), flag.get());
  });
  flag.check("softmax_xent_fwd", labels, p.classes);
  return cost.sums();
}

void softmax_xent_bwd_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                           float scale, float* dx, bool accumulate) {
  cost_bwd<false>("softmax_xent_bwd", p, probs, labels, scale, dx, accumulate);
}

namespace {
// logreg_fwd_kernel over the batch into nll/rank (N,); flag null: nothing recorded.
void logreg_columns(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                    float* nll, int32_t* rank, int* flag) {
  const int lanes = lanes_for(p.images, {probs, labels});
  with_path(p, lanes, [&](auto lanes_c, auto index) {
    using I = decltype(index);
    CONVNET_LAUNCH((logreg_fwd_kernel<decltype(lanes_c)::value, I>),
                   column_blocks(p.images, lanes), kColumnBlock, 0, current_stream(), probs,
                   labels, nll, rank, I(p.classes), I(p.images), flag);
  });
}
}  // namespace

SoftmaxCost logreg_fwd_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels) {
  if (p.images == 0) return {};
  LabelFlag flag;
  CostScratch cost(p.images);
  logreg_columns(p, probs, labels, cost.nll(), cost.rank(), flag.get());
  flag.check("logreg_fwd", labels, p.classes);
  return cost.sums();
}

// Layout as logreg_fwd; the column kernel fills nll/rank (N,), then cost_record_kernel (one
// block of one thread) sums them into *record. Nothing is read back.
void logreg_record_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                        float* nll, int32_t* rank, CostRecord* record) {
  if (p.images > 0) logreg_columns(p, probs, labels, nll, rank, nullptr);
  with_index(column_span(p), [&](auto index) {
    using I = decltype(index);
    CONVNET_LAUNCH(cost_record_kernel<I>, 1, 1, 0, current_stream(), nll, rank, labels,
                   I(p.classes), I(p.images), record);
  });
}

void logreg_bwd_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                     float scale, float* dprobs, bool accumulate) {
  cost_bwd<true>("logreg_bwd", p, probs, labels, scale, dprobs, accumulate);
}

}  // namespace convnet
