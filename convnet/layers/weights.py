"""Layers with weights: conv (shared filters, optional groups) and fc (fully connected).

Buffers (batch innermost, as the kernels want):
  conv  x (C, H, W, N)   w (C/groups, fs, fs, F)   b (F,)   y (F, Ho, Wo, N)
  fc    x (I, N)         w (I, O)                  b (O,)   y (O, N)
``filters`` in a conv section counts the filters *per group*, as in cuda-convnet: a layer with
filters=128 and groups=2 has 256 filters in all; group g reads input channels
[g*C/groups, (g+1)*C/groups).
"""
import math

from .. import ops, rng
from ..config import REQUIRED, as_bool, as_float, as_int, parse_schedule, single
from .base import Layer, Param, register


def _eps(spec, key):
    return single(spec, key, parse_schedule)


def _float(lo=None):
    return lambda spec, key: single(spec, key, lambda s, k: as_float(s, k, lo=lo))


def _shared_biases(spec, key):
    if not as_bool(spec, key):
        raise spec.error(key, "per-position biases (sharedBiases=0) are not supported; use 1")
    return True


def _update_period(spec, key):
    if as_int(spec, key, lo=1) != 1:
        raise spec.error(key, "gradient accumulation over several batches (updatePeriod > 1) is "
                              "not supported; use 1")
    return 1


def _wball(spec, key):
    if single(spec, key, as_float) != 0.0:
        raise spec.error(key, "the weight-ball constraint (wball > 0) is not supported; use 0")
    return 0.0


LEARNING_KEYS = {
    "epsW": (_eps, REQUIRED), "epsB": (_eps, REQUIRED),
    "momW": (_float(0.0), REQUIRED), "momB": (_float(0.0), REQUIRED),
    "wc": (_float(0.0), REQUIRED), "wball": (_wball, 0.0), "updatePeriod": (_update_period, 1),
}


class WeightLayer(Layer):
    PARAM_KEYS = frozenset(LEARNING_KEYS)
    BWD_READS_Y = False

    def _make_params(self, w_shape, b_shape):
        self.w = Param(self, "w", w_shape, "epsW", "momW", "wc")
        self.b = Param(self, "b", b_shape, "epsB", "momB", None)  # biases get no weight decay
        self.params = [self.w, self.b]

    def allocate(self, batch, device):
        for p in self.params:
            p.allocate(device)

    def init_params(self, seed):
        # Weights ~ N(0, initW^2) from the counter-based RNG on the host, one stream per layer,
        # so a seed gives the same net on every backend and any device placement.
        std = self.cfg["initW"]
        host = ops.gaussian_init(self.w.shape, std, seed, rng.RNG_INIT | self.index)
        self.w.value.copy_(host)
        ops.fill_(self.b.value, self.cfg["initB"])


@register
class ConvLayer(WeightLayer):
    TYPE = "conv"
    KEYS = {"channels": (lambda s, k: single(s, k, lambda s2, k2: as_int(s2, k2, lo=1)), None),
            "filters": (lambda s, k: as_int(s, k, lo=1), REQUIRED),
            "filterSize": (lambda s, k: single(s, k, lambda s2, k2: as_int(s2, k2, lo=1)),
                           REQUIRED),
            "padding": (lambda s, k: single(s, k, lambda s2, k2: as_int(s2, k2, lo=0)), 0),
            "stride": (lambda s, k: single(s, k, lambda s2, k2: as_int(s2, k2, lo=1)), 1),
            "groups": (lambda s, k: single(s, k, lambda s2, k2: as_int(s2, k2, lo=1)), 1),
            "sharedBiases": (_shared_biases, True),
            "initW": (_float(0.0), 0.01), "initB": (_float(), 0.0),
            **LEARNING_KEYS}

    def infer(self, in_shapes):
        (shape,) = in_shapes
        if len(shape) != 3:
            raise self.shape_error(f"a conv layer needs images (channels, rows, cols) as input, "
                                   f"got shape {shape}", 0)
        c, h, w = shape
        cfg = self.cfg
        if cfg["channels"] is not None and cfg["channels"] != c:
            raise self.shape_error(f"has {c} channels but {self.name} says channels="
                                   f"{cfg['channels']}", 0)
        g, fs, pad, st = cfg["groups"], cfg["filterSize"], cfg["padding"], cfg["stride"]
        if c % g:
            raise self.shape_error(f"{c} channels cannot be split into groups={g}", 0)
        if h + 2 * pad < fs or w + 2 * pad < fs:
            raise self.shape_error(f"image {h}x{w} (padding {pad}) is smaller than the "
                                   f"{fs}x{fs} filter", 0)
        self.filters = cfg["filters"] * g
        self.out_hw = (ops.conv_out_size(h, fs, pad, st), ops.conv_out_size(w, fs, pad, st))
        self._make_params((c // g, fs, fs, self.filters), (self.filters,))
        return (self.filters,) + self.out_hw

    def flops(self):
        c_g, fs, _, f = self.w.shape
        return 2 * f * math.prod(self.out_hw) * c_g * fs * fs + f * math.prod(self.out_hw)

    def _geometry(self):
        c = self.cfg
        return dict(padding=c["padding"], stride=c["stride"], groups=c["groups"])

    def fwd(self, xs, y, n, ctx):
        ops.conv_fwd(xs[0], self.w.value, out=y, **self._geometry())
        ops.bias_fwd(y, self.b.value)

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        geo = self._geometry()
        ops.bias_bwd(dy, out=self.b.grad)
        ops.conv_bwd_weights(xs[0], dy, self.cfg["filterSize"], out=self.w.grad, **geo)
        if dxs[0] is not None:
            ops.conv_bwd_data(dy, self.w.value, xs[0].shape, out=dxs[0], accumulate=accs[0],
                              **geo)

    def describe(self):
        c = self.cfg
        s = f"{c['filterSize']}x{c['filterSize']}/{c['stride']}"
        s += f" pad {c['padding']}" if c["padding"] else ""
        s += f" groups {c['groups']}" if c["groups"] > 1 else ""
        return s


@register
class FCLayer(WeightLayer):
    TYPE = "fc"
    KEYS = {"outputs": (lambda s, k: as_int(s, k, lo=1), REQUIRED),
            "initW": (_float(0.0), 0.01), "initB": (_float(), 0.0),
            **LEARNING_KEYS}

    def infer(self, in_shapes):
        self.in_features = math.prod(in_shapes[0])
        self._make_params((self.in_features, self.cfg["outputs"]), (self.cfg["outputs"],))
        return (self.cfg["outputs"],)

    def flops(self):
        return 2 * self.in_features * self.cfg["outputs"] + self.cfg["outputs"]

    def fwd(self, xs, y, n, ctx):
        ops.fc_fwd(xs[0].reshape(self.in_features, n), self.w.value, self.b.value, out=y)

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        ops.bias_bwd(dy, out=self.b.grad)
        ops.fc_bwd_weights(xs[0].reshape(self.in_features, n), dy, out=self.w.grad)
        if dxs[0] is not None:
            ops.fc_bwd_data(dy, self.w.value, out=dxs[0].reshape(self.in_features, n),
                            accumulate=accs[0])
