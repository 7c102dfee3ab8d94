"""Softmax over classes and the multinomial logistic cost (cuda-convnet's softmax layer and
cost.logreg), fused or separate.

Layout: logits and probabilities are (K, N), classes x images, image index innermost (FC layout).
Labels are an int32 tensor of shape (N,) with values in [0, K); any other value raises ValueError
naming the image and the label, on every backend.

The forward ops return the probabilities and a dict of SUMS over the batch (so a trainer can add
batches up and divide by the number of images):
  "logprob": sum over images of -log p[label]  (cuda-convnet's logprob is this divided by N)
  "top1":    number of images whose label is not the highest-scoring class
  "top5":    number of images whose label is not among the 5 highest-scoring classes
The sums are taken in the op (in image order, in double precision: deterministic on every
backend), so no per-image arrays are allocated or read back.
An image's rank is the number of classes scored STRICTLY above its label, so ties count in the
label's favour (a label tied for first place is a top-1 hit). The fused op ranks and computes
-log p[label] from the logits (finite however small p[label] is); logreg_cost from the given
probabilities, with p clamped at FLT_MIN (-log p <= 87.34).

Gradients take `scale` from the caller: for the batch-mean cost times a layer coefficient,
scale = coeff / N. softmax_xent_bwd gives d(scale * sum -log p[label])/dx = scale * (p - onehot).
"""
import numpy as np

from ..tensor import empty
from ._dispatch import backend_of, device_of

__all__ = ["COST_RECORD_INTS", "check_labels", "cost_records", "logreg_bwd", "logreg_cost",
           "logreg_record", "softmax", "softmax_bwd", "softmax_xent_bwd", "softmax_xent_fwd"]

# A CostRecord (csrc/common/softmax.h) as a row of int32: logprob (float64), top1, top5,
# bad_image, bad_label (int64).
COST_RECORD_INTS = 10
_RECORD = np.dtype([("logprob", "<f8"), ("top1", "<i8"), ("top5", "<i8"), ("bad_image", "<i8"),
                    ("bad_label", "<i8")])


def _new(like, out=None, dtype=np.float32, shape=None):
    if out is not None:
        return out
    return empty(like.shape if shape is None else shape, dtype, device_of(like))


def _need_out(op, out, accumulate):
    if accumulate and out is None:
        raise ValueError(f"{op}: accumulate=True needs out (the gradient to add to)")


def softmax(x, out=None):
    """probs = softmax(x) over the class dimension of x (K, N); numerically stable."""
    probs = _new(x, out)
    backend_of(x).softmax_fwd(x, probs)
    return probs


def softmax_bwd(dprobs, probs, out=None, accumulate=False):
    """Backward of a standalone softmax: dx = p * (dprobs - sum_k p * dprobs)."""
    _need_out("softmax_bwd", out, accumulate)
    dx = _new(probs, out)
    backend_of(probs).softmax_bwd(probs, dprobs, dx, bool(accumulate))
    return dx


def softmax_xent_fwd(x, labels, out=None):
    """Fused softmax + cost: (probs, {"logprob", "top1", "top5"}) with batch sums."""
    probs = _new(x, out)
    return probs, backend_of(x).softmax_xent_fwd(x, labels, probs)


def softmax_xent_bwd(probs, labels, scale, out=None, accumulate=False, labels_checked=False):
    """dx = scale * (probs - onehot(labels)); with accumulate, out += that. `labels_checked`:
    the labels were checked already (logreg_record on the same stream): a CUDA or emulated
    device then does not read its bad-label flag back, so the host does not wait."""
    _need_out("softmax_xent_bwd", out, accumulate)
    dx = _new(probs, out)
    backend_of(probs).softmax_xent_bwd(probs, labels, dx, float(scale), bool(accumulate),
                                       bool(labels_checked))
    return dx


def logreg_cost(probs, labels):
    """Cost of given probabilities (K, N): {"logprob", "top1", "top5"} batch sums."""
    return backend_of(probs).logreg_fwd(probs, labels)


def logreg_record(probs, labels, nll, rank, records, slot):
    """logreg_cost kept on the device: per image -log p[label] into `nll` (N,) float32 and the
    rank into `rank` (N,) int32, their batch sums into row `slot` of `records` ((R, 10) int32,
    one CostRecord per row), all in the device's stream order; nothing is read back (the host
    does not wait). A bad label is recorded, not raised: `cost_records` raises for it."""
    backend_of(probs).logreg_record(probs, labels, nll, rank, records, int(slot))


def _bad_label(image, label, classes):
    # The kernels' message (csrc/common/softmax.h, throw_bad_label), for the host-side checks.
    return ValueError(f"logreg_fwd: labels[{image}] = {label} is not a class index in "
                      f"[0, {classes})")


def check_labels(labels, classes):
    """ValueError naming the first of `labels` (a host array) outside [0, classes), as the cost
    kernels would: checked on the host, a device need not read its bad-label flag back."""
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise _bad_label(bad[0], labels[bad[0]], classes)


def cost_records(records, rows, classes):
    """[{"logprob", "top1", "top5"}] of the given rows of `records` (a host copy), as
    logreg_cost returns them; ValueError naming the first bad label logreg_record saw."""
    table = np.ascontiguousarray(records, dtype=np.int32).view(_RECORD).reshape(-1)
    out = []
    for r in rows:
        rec = table[r]
        if rec["bad_image"] >= 0:
            raise _bad_label(rec["bad_image"], rec["bad_label"], classes)
        out.append({"logprob": float(rec["logprob"]), "top1": int(rec["top1"]),
                    "top5": int(rec["top5"])})
    return out


def logreg_bwd(probs, labels, scale, out=None, accumulate=False):
    """d(scale * sum -log p[label])/dprobs: -scale / p[label] at each image's label, 0 elsewhere."""
    _need_out("logreg_bwd", out, accumulate)
    dp = _new(probs, out)
    backend_of(probs).logreg_bwd(probs, labels, dp, float(scale), bool(accumulate))
    return dp
