// Softmax over classes and the multinomial logistic cost (cuda-convnet's `softmax` layer and
// `cost.logreg`), fused or separate.
//
//   x, probs, dx, dprobs : (K, N)  classes x images, image index innermost: image n is the strided
//                                  column x[k * N + n] (kernels map threads to images)
//   labels               : (N,)    int32 class of each image, must be in [0, K)
//
// The cost ops compute per image nll = -log p[label] (cuda-convnet's "logprob") and rank = the
// number of classes scored strictly above the label (top-1 error iff rank >= 1, top-5 error iff
// rank >= 5; ties count in the label's favour), and return their sums over the batch (SoftmaxCost).
// The per-image values live in scratch of the op: (N,) floats and (N,) int32; they are summed in
// image order in double precision on the host, so the sums do not depend on the thread count or
// the schedule.
//
// Every op that reads labels checks them; a label outside [0, K) raises ValueError naming the
// image and the label (the CUDA kernels set a flag that the launcher reads back).
#pragma once
#include "check.h"
#include "op.h"

namespace convnet {

// The error every backend raises for the first (lowest image index) bad label.
[[noreturn]] inline void throw_bad_label(const char* op, int64_t image, int64_t label,
                                         int64_t classes) {
  std::ostringstream msg;
  msg << op << ": labels[" << image << "] = " << label << " is not a class index in [0, "
      << classes << ")";
  detail::fail<ArgError>(__FILE__, __LINE__, msg.str());
}

struct SoftmaxParams {
  int64_t classes = 0;  // K
  int64_t images = 0;   // N
  // The gradient ops' labels were checked already (by logreg_record earlier in the same stream,
  // whose record reports a bad one): the CUDA launchers then skip their bad-label flag and its
  // read-back, so a training step does not wait. A bad label can only give wrong gradients, never
  // an out-of-bounds access.
  bool labels_checked = false;
};

// Batch sums of the cost: a trainer adds batches up and divides by the number of images.
struct SoftmaxCost {
  double logprob = 0.0;  // sum of nll
  int64_t top1 = 0;      // images with rank >= 1
  int64_t top5 = 0;      // images with rank >= 5
};

// One batch's cost sums as a record in device (or host) memory, written by logreg_record: the
// two-device executor keeps one per step in a ring on the device and reads the ring when the
// trainer prints, so no step waits for its statistics. 40 bytes: a row of 10 int32 to Python.
struct CostRecord {
  double logprob;     // sum of nll in image order, in double precision (as sum_cost)
  int64_t top1;       // images with rank >= 1
  int64_t top5;       // images with rank >= 5
  int64_t bad_image;  // the lowest image whose label is not in [0, K), or -1
  int64_t bad_label;  // that image's label
};
static_assert(sizeof(CostRecord) == 40, "CostRecord is read as 10 int32 by the Python side");
constexpr int kCostRecordInts = 10;

// nll, rank: (n,) per image; summed in image order (deterministic).
inline SoftmaxCost sum_cost(const float* nll, const int32_t* rank, int64_t n) {
  SoftmaxCost c;
  for (int64_t i = 0; i < n; ++i) {
    c.logprob += double(nll[i]);
    c.top1 += rank[i] >= 1;
    c.top5 += rank[i] >= 5;
  }
  return c;
}

// probs = softmax(x) per column, stable (the column maximum is subtracted first).
CONVNET_OP(void, softmax_fwd, (const SoftmaxParams& p, const float* x, float* probs))
// Backward of a standalone softmax: dx (+)= p * (dprobs - sum_k p * dprobs).
CONVNET_OP(void, softmax_bwd, (const SoftmaxParams& p, const float* probs, const float* dprobs,
                               float* dx, bool accumulate))

// Fused softmax + cost forward. nll is computed from the logits,
// -log p[label] = m + log s - x[label], so it stays finite however small p[label] is; rank compares the logits.
CONVNET_OP(SoftmaxCost, softmax_xent_fwd, (const SoftmaxParams& p, const float* x,
                                           const int32_t* labels, float* probs))
// Gradient of scale * sum_n nll[n] w.r.t. x: dx (+)= scale * (probs - onehot(labels)).
CONVNET_OP(void, softmax_xent_bwd, (const SoftmaxParams& p, const float* probs,
                                    const int32_t* labels, float scale, float* dx,
                                    bool accumulate))

// Cost of given probabilities (a separate softmax layer then cost.logreg):
// nll = -log max(p[label], FLT_MIN) (finite: at most 87.34), rank compares the probabilities.
CONVNET_OP(SoftmaxCost, logreg_fwd, (const SoftmaxParams& p, const float* probs,
                                     const int32_t* labels))
// logreg_fwd without reading anything back: per image nll (N,) and rank (N,) into the caller's
// buffers, then their sums (as sum_cost) and the first bad label into *record, all in the
// device's stream order. A bad label does not throw here: it is in the record (sums left 0).
CONVNET_OP(void, logreg_record, (const SoftmaxParams& p, const float* probs,
                                 const int32_t* labels, float* nll, int32_t* rank,
                                 CostRecord* record))
// Gradient of scale * sum_n nll[n] w.r.t. probs: dprobs (+)= -scale / max(p[label], FLT_MIN) at
// the label, 0 elsewhere.
CONVNET_OP(void, logreg_bwd, (const SoftmaxParams& p, const float* probs, const int32_t* labels,
                              float scale, float* dprobs, bool accumulate))

}  // namespace convnet
