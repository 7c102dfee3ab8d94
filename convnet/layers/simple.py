"""Weightless layers on one input: pool, cmrnorm (the paper's LRN), rnorm, neuron, dropout.

Buffers: x (C, H, W, N), y (C, Ho, Wo, N) for pool, (C, H, W, N) for the rest; LRN keeps its
denominators (C, H, W, N) from the forward pass for the backward pass; dropout its mask; a trained
max pool its windows' winners (uint8, y's shape).
"""
import math

import numpy as np

from .. import ops, rng
from ..config import REQUIRED, as_bool, as_choice, as_float, as_int, parse_neuron
from .base import BatchBuffer, Layer, register


def _int(lo):
    return lambda s, k: as_int(s, k, lo=lo)


def _images(layer, shape):
    if len(shape) != 3:
        raise layer.shape_error(f"a {layer.TYPE} layer needs images (channels, rows, cols), "
                                f"got shape {shape}", 0)
    return shape


def _check_channels(layer, c):
    if layer.cfg.get("channels") is not None and layer.cfg["channels"] != c:
        raise layer.shape_error(f"has {c} channels but {layer.name} says channels="
                                f"{layer.cfg['channels']}", 0)


@register
class PoolLayer(Layer):
    TYPE = "pool"
    KEYS = {"pool": (lambda s, k: as_choice(s, k, ("max", "avg")), REQUIRED),
            "sizeX": (_int(1), REQUIRED), "stride": (_int(1), REQUIRED),
            "start": (lambda s, k: as_int(s, k), 0),  # <= 0: windows may begin before the image
            "outputsX": (_int(0), 0), "channels": (_int(1), None)}

    def infer(self, in_shapes):
        c, h, w = _images(self, in_shapes[0])
        _check_channels(self, c)
        cfg = self.cfg
        if not -cfg["sizeX"] < cfg["start"] <= 0:
            raise self.spec.error("start", f"must be in {1 - cfg['sizeX']}..0 (the first "
                                           f"{cfg['sizeX']}x{cfg['sizeX']} window starts at "
                                           f"start and must hold a pixel), got {cfg['start']}")
        if cfg["sizeX"] > h - cfg["start"] or cfg["sizeX"] > w - cfg["start"]:
            raise self.shape_error(f"image {h}x{w} is smaller than the {cfg['sizeX']}x"
                                   f"{cfg['sizeX']} pooling window (start {cfg['start']})", 0)
        ho = ops.pool_out_size(h, cfg["sizeX"], cfg["stride"], cfg["start"])
        wo = ops.pool_out_size(w, cfg["sizeX"], cfg["stride"], cfg["start"])
        for side, outs in ((h, ho), (w, wo)):
            # Rounding up with a stride above the window can start the last window past the
            # image's edge: it would pool nothing (the ops refuse it).
            last = cfg["start"] + (outs - 1) * cfg["stride"]
            if last >= side:
                raise self.spec.error("stride", f"the last of the {outs} windows of the "
                                                f"{side}-pixel input would start at pixel "
                                                f"{last}, past its edge (a stride above sizeX="
                                                f"{cfg['sizeX']} skips pixels)")
        if cfg["outputsX"] and cfg["outputsX"] != wo:
            raise self.spec.error("outputsX", f"the input gives {wo} outputs, not "
                                              f"{cfg['outputsX']} (use 0 to compute it)")
        return (c, ho, wo)

    def flops(self):
        return math.prod(self.out_shape) * self.cfg["sizeX"] ** 2

    def _geo(self):
        c = self.cfg
        return dict(size=c["sizeX"], stride=c["stride"], start=c["start"])

    # Whether this layer's backward pass runs (set by Net._plan_backward): a max pool then keeps
    # its windows' winners from a training forward for the backward, which routes from them
    # without reading x or y (ops.pool_bwd's winners); nets that only infer keep none.
    backward_runs = False

    def allocate(self, batch, device):
        self.winners = None
        self._winners_of = None  # the batch size of the forward the winners are from
        if (self.backward_runs and self.cfg["pool"] == "max"
                and self.cfg["sizeX"] <= ops.MAX_WINNER_SIZE):
            self.winners = BatchBuffer(self.out_shape, batch, device, np.uint8)

    def fwd(self, xs, y, n, ctx):
        w = self.winners.view(n) if self.winners is not None and ctx.train else None
        ops.pool_fwd(xs[0], self.cfg["pool"], out=y, winners=w, **self._geo())
        self._winners_of = n if w is not None else None

    # The layer whose fused bias + ReLU output this pool reads, when the net lets the pool's
    # backward mask that layer's gradient and write its bias gradient (Net._plan_backward).
    relu_bias_of = None

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        P = self.relu_bias_of
        # After a forward that kept no winners (a test-time one), the (x, y) backward: the same.
        w = self.winners.view(n) if self._winners_of == n else None
        ops.pool_bwd(dy, xs[0], y, self.cfg["pool"], out=dxs[0], accumulate=accs[0],
                     relu_bias=None if P is None else P.b.grad, winners=w, **self._geo())

    def describe(self):
        c = self.cfg
        return f"{c['pool']} {c['sizeX']}x{c['sizeX']}/{c['stride']}"


class _Norm(Layer):
    """Response normalisation: y = x / (minDiv + scale' * sum of x^2 over a neighbourhood)^pow,
    with cuda-convnet's convention scale' = scale / size for cmrnorm, scale / size^2 for rnorm.
    Same-map windows (rnorm, cnorm) may be given as ``sizeX``, cuda-convnet's first spelling."""
    KEYS = {"size": (_int(1), REQUIRED), "channels": (_int(1), None),
            "scale": (lambda s, k: as_float(s, k, lo=0.0), REQUIRED),
            "pow": (lambda s, k: as_float(s, k), REQUIRED),
            "minDiv": (lambda s, k: as_float(s, k, lo=0.0, lo_open=True), 1.0)}
    PARAM_KEYS = frozenset({"scale", "pow", "minDiv"})
    FWD = BWD = None
    SIZE_ALIAS = None  # "sizeX" where cuda-convnet's files spelled the window that way

    def __init__(self, spec, neurons):
        alias = self.SIZE_ALIAS
        if alias and spec.has(alias):
            if spec.has("size"):
                raise spec.error(alias, f"give the window as size or as {alias} (its older "
                                        "spelling), not both")
            spec.values["size"] = spec.values.pop(alias)
        super().__init__(spec, neurons)

    def infer(self, in_shapes):
        c, h, w = _images(self, in_shapes[0])
        _check_channels(self, c)
        return (c, h, w)

    def allocate(self, batch, device):
        self.denoms = BatchBuffer(self.out_shape, batch, device)

    def _args(self):
        c = self.cfg
        return dict(size=c["size"], scale=c["scale"], pow=c["pow"], min_div=c["minDiv"])

    def fwd(self, xs, y, n, ctx):
        getattr(ops, self.FWD)(xs[0], out=y, denoms=self.denoms.view(n), **self._args())

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        getattr(ops, self.BWD)(dy, xs[0], y, self.denoms.view(n), out=dxs[0],
                               accumulate=accs[0], **self._args())

    def describe(self):
        c = self.cfg
        return f"size {c['size']} scale {c['scale']:g} pow {c['pow']:g} k {c['minDiv']:g}"


@register
class CrossMapNormLayer(_Norm):
    """``groups=G`` (convnet's key, default 1) normalises each block of C/G channels on its own:
    the paper's LRN, which each GPU ran over its own half of the maps, written for one device
    (layers/alexnet.cfg). A block is a contiguous slice of the (C, H, W, N) buffers."""
    TYPE = "cmrnorm"
    FWD, BWD = "lrn_fwd", "lrn_bwd"
    KEYS = {**_Norm.KEYS, "groups": (_int(1), 1)}

    def infer(self, in_shapes):
        c, h, w = super().infer(in_shapes)
        if c % self.cfg["groups"]:
            raise self.spec.error("groups", f"{c} channels cannot be split into groups="
                                            f"{self.cfg['groups']}")
        return (c, h, w)

    def _blocks(self, *tensors):
        g = self.cfg["groups"]
        per = self.out_shape[0] // g
        for k in range(g):
            yield [t.narrow(k * per, per) if t is not None else None for t in tensors]

    def fwd(self, xs, y, n, ctx):
        for x, yk, d in self._blocks(xs[0], y, self.denoms.view(n)):
            ops.lrn_fwd(x, out=yk, denoms=d, **self._args())

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        for dyk, x, yk, d, dx in self._blocks(dy, xs[0], y, self.denoms.view(n), dxs[0]):
            ops.lrn_bwd(dyk, x, yk, d, out=dx, accumulate=accs[0], **self._args())

    def flops(self):
        return math.prod(self.out_shape) * (2 * self.cfg["size"] + 4)

    def describe(self):
        g = self.cfg["groups"]
        return super().describe() + (f" groups {g}" if g > 1 else "")


@register
class SameMapNormLayer(_Norm):
    TYPE = "rnorm"
    FWD, BWD = "rnorm_fwd", "rnorm_bwd"
    SIZE_ALIAS = "sizeX"

    def flops(self):
        return math.prod(self.out_shape) * (2 * self.cfg["size"] ** 2 + 4)


@register
class ContrastNormLayer(_Norm):
    """cuda-convnet's contrast normalisation: y = x / (minDiv + scale' * sum of m^2)^pow over
    size x size windows, where m = x minus its mean over the same window (ops/cnorm.py).
    Keeps m and the denominators from the forward pass, and two scratch buffers."""
    TYPE = "cnorm"
    SIZE_ALIAS = "sizeX"

    def allocate(self, batch, device):
        super().allocate(batch, device)
        self.mean_diffs = BatchBuffer(self.out_shape, batch, device)
        self.scratch = [BatchBuffer(self.out_shape, batch, device) for _ in range(2)]

    def fwd(self, xs, y, n, ctx):
        ops.cnorm_fwd(xs[0], out=y, mean_diffs=self.mean_diffs.view(n),
                      denoms=self.denoms.view(n), **self._args())

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        args = self._args()
        del args["min_div"]
        ops.cnorm_bwd(dy, xs[0], y, self.mean_diffs.view(n), self.denoms.view(n), out=dxs[0],
                      accumulate=accs[0], scratch=(self.scratch[0].view(n),
                                                   self.scratch[1].view(n)), **args)

    def flops(self):
        return math.prod(self.out_shape) * (3 * self.cfg["size"] ** 2 + 8)


@register
class NeuronLayer(Layer):
    """A standalone activation: y = f(x)."""
    TYPE = "neuron"
    NEURON = False

    def __init__(self, spec, neurons):
        self.KEYS = {"neuron": (lambda s, k: parse_neuron(s, k, neurons), REQUIRED)}
        super().__init__(spec, neurons)
        self.kind = self.cfg["neuron"]
        self.neuron = None  # `neuron=` is this layer's function, not one applied after it

    def infer(self, in_shapes):
        return in_shapes[0]

    def flops(self):
        return math.prod(self.out_shape)

    def fwd(self, xs, y, n, ctx):
        kind, a, b = self.kind
        ops.neuron_fwd(xs[0], kind, a, b, out=y)

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        kind, a, b = self.kind
        ops.neuron_bwd(dy, xs[0], y, kind, a, b, out=dxs[0], accumulate=accs[0])

    def describe(self):
        return self.kind[0]


class _Dropout(Layer):
    """Drops each unit with probability 1-keep during training. The mask is a pure function of
    (seed, layer, batch slice, step), so a resumed run draws the same masks as an uninterrupted
    one; each slice of a replicated layer (and each MPI rank's) draws its own."""
    KEYS = {"keep": (lambda s, k: as_float(s, k, lo=0.0, hi=1.0, lo_open=True), 0.5),
            "enable": (as_bool, True)}
    PARAM_KEYS = frozenset({"keep", "enable"})
    INVERTED = None

    def infer(self, in_shapes):
        return in_shapes[0]

    def allocate(self, batch, device):
        self.mask = BatchBuffer(self.out_shape, batch, device, np.uint8)

    def fwd(self, xs, y, n, ctx):
        part = ctx.slice_base + self.slice  # the slice of the (global) batch
        ops.dropout_fwd(xs[0], self.cfg["keep"], seed=ctx.seed,
                        stream=rng.RNG_DROPOUT | (part << 16) | self.index, step=ctx.step,
                        inverted=self.INVERTED, train=ctx.train and self.cfg["enable"], out=y,
                        mask=self.mask.view(n))

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        if not self.cfg["enable"]:
            # The forward pass was the test-time one: x (dropout) or x * keep (dropout2).
            scale = 1.0 if self.INVERTED else self.cfg["keep"]
            if accs[0]:
                ops.add_(dxs[0], dy, scale)
            else:
                ops.copy_(dxs[0], dy)
                if scale != 1.0:
                    ops.scale_(dxs[0], scale)
            return
        ops.dropout_bwd(dy, self.mask.view(n), self.cfg["keep"], self.INVERTED, out=dxs[0],
                        accumulate=accs[0])

    def flops(self):
        return math.prod(self.out_shape)

    def describe(self):
        return f"keep {self.cfg['keep']:g}" + ("" if self.cfg["enable"] else " (disabled)")


@register
class DropoutLayer(_Dropout):
    """Inverted dropout: kept units are scaled by 1/keep in training; identity at test time."""
    TYPE = "dropout"
    INVERTED = True


@register
class PaperDropoutLayer(_Dropout):
    """The paper's dropout: a 0/1 mask in training; outputs multiplied by keep at test time."""
    TYPE = "dropout2"
    INVERTED = False
