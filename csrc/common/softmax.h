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
};

// Batch sums of the cost: a trainer adds batches up and divides by the number of images.
struct SoftmaxCost {
  double logprob = 0.0;  // sum of nll
  int64_t top1 = 0;      // images with rank >= 1
  int64_t top5 = 0;      // images with rank >= 5
};

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
// Gradient of scale * sum_n nll[n] w.r.t. probs: dprobs (+)= -scale / max(p[label], FLT_MIN) at
// the label, 0 elsewhere.
CONVNET_OP(void, logreg_bwd, (const SoftmaxParams& p, const float* probs, const int32_t* labels,
                              float scale, float* dprobs, bool accumulate))

}  // namespace convnet
