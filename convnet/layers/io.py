"""The ends of the net: data layers, softmax and the logistic-regression cost.

Buffers: images (3, crop, crop, N) float32, labels (N,) int32 (stored as the per-image shape
()), probs (K, N). The softmax gradient is computed fused with the cost (probs - onehot), as
cuda-convnet did, so a softmax layer must feed exactly one cost.logreg layer if it is trained.
"""
from .. import ops
from ..config import as_float, as_int
from .base import Layer, register


@register
class DataLayer(Layer):
    """dataIdx=0: the images of a batch; dataIdx=1: its labels."""
    TYPE = "data"
    KEYS = {"dataIdx": (lambda s, k: as_int(s, k, lo=0, hi=1), 0)}
    INPUTS = (0, 0)
    NEURON = False
    is_data = True

    @property
    def is_labels(self):
        return self.cfg["dataIdx"] == 1

    def infer(self, in_shapes):
        raise AssertionError("data layer shapes come from the data source")


@register
class SoftmaxLayer(Layer):
    TYPE = "softmax"
    NEURON = False

    def infer(self, in_shapes):
        if len(in_shapes[0]) != 1:
            raise self.shape_error(f"softmax needs a vector per image (an fc layer), got shape "
                                   f"{in_shapes[0]}", 0)
        return in_shapes[0]

    def flops(self):
        return 4 * self.out_shape[0]

    def fwd(self, xs, y, n, ctx):
        ops.softmax(xs[0], out=y)


@register
class LogRegCostLayer(Layer):
    """Multinomial logistic regression: cost = -coeff * mean log p(label). inputs=labels,probs.
    ``stats`` of a batch: logprob = sum of -log p(label) (cuda-convnet's "logprob", positive),
    top1 / top5 = number of images whose label is not among the 1 / 5 most probable classes.
    cuda-convnet2's ``topk`` key is accepted; the errors reported are always top-1 and top-5."""
    TYPE = "cost.logreg"
    KEYS = {"coeff": (lambda s, k: as_float(s, k, lo=0.0), 1.0),
            "topk": (lambda s, k: as_int(s, k, lo=1), 5)}
    PARAM_KEYS = frozenset({"coeff", "topk"})
    INPUTS = (2, 2)
    NEURON = False
    is_cost = True

    def infer(self, in_shapes):
        labels, probs = in_shapes
        if labels != ():
            raise self.shape_error("the first input must be the labels (a data layer with "
                                   "dataIdx=1)", 0)
        if len(probs) != 1:
            raise self.shape_error(f"the second input must be class probabilities (a softmax "
                                   f"layer), got shape {probs}", 1)
        self.classes = probs[0]
        return ()

    def fwd(self, xs, y, n, ctx):
        labels, probs = xs
        self.stats = ops.logreg_cost(probs, labels)

    def fwd_record(self, xs, nll, rank, records, slot):
        """The batch sums kept on the device: into row `slot` of `records` (ops.logreg_record;
        the executor on CUDA and emulated devices reads them when the statistics are wanted)."""
        labels, probs = xs
        ops.logreg_record(probs, labels, nll, rank, records, slot)

    def bwd_fused(self, probs, labels, dx, acc, n, labels_checked=False):
        """Gradient of the mean cost w.r.t. the softmax *input*: coeff * (probs - onehot) / n.
        `labels_checked`: see ops.softmax_xent_bwd."""
        ops.softmax_xent_bwd(probs, labels, self.cfg["coeff"] / n, out=dx, accumulate=acc,
                             labels_checked=labels_checked)

    def describe(self):
        return f"coeff {self.cfg['coeff']:g}"
