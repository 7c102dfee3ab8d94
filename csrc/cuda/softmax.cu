// Softmax and logistic-regression cost on the GPU (declared in csrc/common/softmax.h).
//
// Column kernels (softmax forward/backward, the fused cost, logreg forward): x (K, N) with image n
// the column x[k * N + n]. A block is 32 images x 16 class slices: threadIdx.x = image (32
// consecutive floats per row load: coalesced), threadIdx.y = slice, which walks classes
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
#include <optional>
#include <vector>

#include "cuda_check.h"
#include "grid_stride.cuh"
#include "lanes.cuh"
#include "softmax.h"

namespace convnet {
namespace {

constexpr int kImages = 32, kSlices = 16;

__device__ __forceinline__ bool bad_label(int32_t label, int64_t K) {
  return label < 0 || label >= K;
}

// Softmax of a column (+ with labels: nll, rank). nll/rank/labels/flag are null without labels.
// The explicit 2 blocks/SM: with the bound alone, ptxas for sm_100 caps the labelled kernel at 32
// registers and spills; with it, it takes 51 and spills nothing.
template <bool kLabels>
__global__ void __launch_bounds__(kImages * kSlices, 2)
softmax_fwd_kernel(const float* x, const int32_t* labels, float* probs, float* nll,
                   int32_t* rank, int64_t K, int64_t N, int* flag) {
  __shared__ float sm_m[kSlices][kImages], sm_s[kSlices][kImages];
  __shared__ int32_t sm_c[kSlices][kImages];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n = blockIdx.x * int64_t(kImages) + tx;
  const bool valid = n < N;
  bool bad = false;
  float xl = 0.f;
  if (kLabels && valid) {
    const int32_t lab = labels[n];
    bad = bad_label(lab, K);
    if (bad && ty == 0) atomicMin(flag, int(n));
    xl = bad ? 0.f : x[int64_t(lab) * N + n];
  }
  // Online: s = sum over the slice of e^(x - m), rescaled whenever the maximum m grows.
  float m = -INFINITY, s = 0.f;
  int32_t c = 0;
  if (valid) {
    for (int64_t k = ty; k < K; k += kSlices) {
      const float v = x[k * N + n];
      if (v > m) {
        s = (m == -INFINITY ? 0.f : s * expf(m - v)) + 1.f;
        m = v;
      } else {
        s += expf(v - m);
      }
      if (kLabels) c += v > xl;
    }
  }
  sm_m[ty][tx] = m;
  sm_s[ty][tx] = s;
  sm_c[ty][tx] = c;
  __syncthreads();
  if (ty == 0) {
    float M = -INFINITY;
    for (int j = 0; j < kSlices; ++j) M = fmaxf(M, sm_m[j][tx]);
    float S = 0.f;
    int32_t C = 0;
    for (int j = 0; j < kSlices; ++j) {
      if (sm_m[j][tx] != -INFINITY) S += sm_s[j][tx] * expf(sm_m[j][tx] - M);
      C += sm_c[j][tx];
    }
    sm_m[0][tx] = M;
    sm_s[0][tx] = S;
    if (kLabels && valid) {
      nll[n] = bad ? 0.f : M + logf(S) - xl;
      rank[n] = C;
    }
  }
  __syncthreads();
  if (valid) {
    const float M = sm_m[0][tx], inv = 1.f / sm_s[0][tx];
    for (int64_t k = ty; k < K; k += kSlices) probs[k * N + n] = expf(x[k * N + n] - M) * inv;
  }
}

__global__ void __launch_bounds__(kImages * kSlices)
softmax_bwd_kernel(const float* p, const float* dp, float* dx, int64_t K, int64_t N,
                   bool accumulate) {
  __shared__ float sm_d[kSlices][kImages];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n = blockIdx.x * int64_t(kImages) + tx;
  const bool valid = n < N;
  float d = 0.f;
  if (valid)
    for (int64_t k = ty; k < K; k += kSlices) d += p[k * N + n] * dp[k * N + n];
  sm_d[ty][tx] = d;
  __syncthreads();
  if (ty == 0) {
    float D = 0.f;
    for (int j = 0; j < kSlices; ++j) D += sm_d[j][tx];
    sm_d[0][tx] = D;
  }
  __syncthreads();
  if (valid) {
    const float D = sm_d[0][tx];
    for (int64_t k = ty; k < K; k += kSlices) {
      const int64_t i = k * N + n;
      const float g = p[i] * (dp[i] - D);
      dx[i] = accumulate ? dx[i] + g : g;
    }
  }
}

__global__ void __launch_bounds__(kImages * kSlices)
logreg_fwd_kernel(const float* p, const int32_t* labels, float* nll, int32_t* rank, int64_t K,
                  int64_t N, int* flag) {
  __shared__ int32_t sm_c[kSlices][kImages];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n = blockIdx.x * int64_t(kImages) + tx;
  const bool valid = n < N;
  bool bad = false;
  float pl = 0.f;
  if (valid) {
    const int32_t lab = labels[n];
    bad = bad_label(lab, K);
    if (bad && ty == 0 && flag) atomicMin(flag, int(n));  // logreg_record: no flag
    pl = bad ? 0.f : p[int64_t(lab) * N + n];
  }
  int32_t c = 0;
  if (valid)
    for (int64_t k = ty; k < K; k += kSlices) c += p[k * N + n] > pl;
  sm_c[ty][tx] = c;
  __syncthreads();
  if (ty == 0 && valid) {
    int32_t C = 0;
    for (int j = 0; j < kSlices; ++j) C += sm_c[j][tx];
    nll[n] = bad ? 0.f : -logf(fmaxf(pl, FLT_MIN));
    rank[n] = C;
  }
}

// The sums of one batch into its record: one thread walks the images in order and adds in double
// precision, exactly as sum_cost does on the host (a few microseconds for a batch of 128, and the
// same bits as the host sum), and notes the first bad label.
__global__ void cost_record_kernel(const float* nll, const int32_t* rank, const int32_t* labels,
                                   int64_t K, int64_t N, CostRecord* record) {
  CostRecord r{0.0, 0, 0, -1, 0};
  for (int64_t n = 0; n < N; ++n) {
    if (bad_label(labels[n], K)) {
      r = CostRecord{0.0, 0, 0, n, labels[n]};
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
template <int L, bool kLogreg>
__global__ void cost_bwd_kernel(const float* p, const int32_t* labels, float scale, float* dx,
                                int64_t K, int64_t N, bool accumulate, int* flag) {
  using V = Lanes<L>;
  const int64_t n = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * L;
  if (n >= N) return;
  int32_t lab[L];
  if constexpr (L == 4) {
    const int4 q = *reinterpret_cast<const int4*>(labels + n);
    lab[0] = q.x, lab[1] = q.y, lab[2] = q.z, lab[3] = q.w;
  } else {
    lab[0] = labels[n];
  }
  if (flag && blockIdx.y == 0) {
#pragma unroll
    for (int l = 0; l < L; ++l)
      if (bad_label(lab[l], K)) atomicMin(flag, int(n + l));
  }
  for (int64_t k = blockIdx.y; k < K; k += gridDim.y) {
    const int64_t i = k * N + n;
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

unsigned column_blocks(int64_t N) { return unsigned((N + kImages - 1) / kImages); }
const dim3 kColumnBlock(kImages, kSlices);

template <bool kLogreg>
void cost_bwd(const char* op, const SoftmaxParams& p, const float* probs, const int32_t* labels,
              float scale, float* dx, bool accumulate) {
  if (p.images == 0) return;
  const int threads = 256;
  const int lanes =
      p.images % 4 == 0 && aligned16(probs) && aligned16(dx) && aligned16(labels) ? 4 : 1;
  dim3 grid(unsigned((p.images / lanes + threads - 1) / threads),
            unsigned(p.classes < 1024 ? p.classes : 1024));
  // Labels checked by the caller (the net checks them on the host before a step): no flag to
  // read back, so no host wait.
  std::optional<LabelFlag> flag;
  int* flag_ptr = nullptr;
  if (!p.labels_checked) flag_ptr = flag.emplace().get();
  if (lanes == 4)
    CONVNET_LAUNCH((cost_bwd_kernel<4, kLogreg>), grid, threads, 0, current_stream(), probs,
                   labels, scale, dx, p.classes, p.images, accumulate, flag_ptr);
  else
    CONVNET_LAUNCH((cost_bwd_kernel<1, kLogreg>), grid, threads, 0, current_stream(), probs,
                   labels, scale, dx, p.classes, p.images, accumulate, flag_ptr);
  if (flag) flag->check(op, labels, p.classes);
}

}  // namespace

void softmax_fwd_cuda(const SoftmaxParams& p, const float* x, float* probs) {
  if (p.images == 0) return;
  CONVNET_LAUNCH((softmax_fwd_kernel<false>), column_blocks(p.images), kColumnBlock, 0,
                 current_stream(), x, nullptr, probs, nullptr, nullptr, p.classes, p.images,
                 nullptr);
}

void softmax_bwd_cuda(const SoftmaxParams& p, const float* probs, const float* dprobs, float* dx,
                      bool accumulate) {
  if (p.images == 0) return;
  CONVNET_LAUNCH(softmax_bwd_kernel, column_blocks(p.images), kColumnBlock, 0, current_stream(),
                 probs, dprobs, dx, p.classes, p.images, accumulate);
}

SoftmaxCost softmax_xent_fwd_cuda(const SoftmaxParams& p, const float* x, const int32_t* labels,
                                  float* probs) {
  if (p.images == 0) return {};
  LabelFlag flag;
  CostScratch cost(p.images);
  CONVNET_LAUNCH((softmax_fwd_kernel<true>), column_blocks(p.images), kColumnBlock, 0,
                 current_stream(), x, labels, probs, cost.nll(), cost.rank(), p.classes,
                 p.images, flag.get());
  flag.check("softmax_xent_fwd", labels, p.classes);
  return cost.sums();
}

void softmax_xent_bwd_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                           float scale, float* dx, bool accumulate) {
  cost_bwd<false>("softmax_xent_bwd", p, probs, labels, scale, dx, accumulate);
}

SoftmaxCost logreg_fwd_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels) {
  if (p.images == 0) return {};
  LabelFlag flag;
  CostScratch cost(p.images);
  CONVNET_LAUNCH(logreg_fwd_kernel, column_blocks(p.images), kColumnBlock, 0, current_stream(),
                 probs, labels, cost.nll(), cost.rank(), p.classes, p.images, flag.get());
  flag.check("logreg_fwd", labels, p.classes);
  return cost.sums();
}

// Layout as logreg_fwd; the column kernel fills nll/rank (N,), then cost_record_kernel (one
// block of one thread) sums them into *record. Nothing is read back.
void logreg_record_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                        float* nll, int32_t* rank, CostRecord* record) {
  if (p.images > 0)
    CONVNET_LAUNCH(logreg_fwd_kernel, column_blocks(p.images), kColumnBlock, 0, current_stream(),
                   probs, labels, nll, rank, p.classes, p.images, nullptr);
  CONVNET_LAUNCH(cost_record_kernel, 1, 1, 0, current_stream(), nll, rank, labels, p.classes,
                 p.images, record);
}

void logreg_bwd_cuda(const SoftmaxParams& p, const float* probs, const int32_t* labels,
                     float scale, float* dprobs, bool accumulate) {
  cost_bwd<true>("logreg_bwd", p, probs, labels, scale, dprobs, accumulate);
}

}  // namespace convnet
