"""Layers with weights: conv (shared filters, optional groups), local (locally connected: a
conv layer with its own filters at every output position) and fc (fully connected).

Buffers (batch innermost, as the kernels want):
  conv  x (C, H, W, N)   w (C/groups, fs, fs, F)           b (F,)   y (F, Ho, Wo, N)
  local x (C, H, W, N)   w (Ho, Wo, C/groups, fs, fs, F)   b (F, Ho, Wo)
  fc    x (I, N)         w (I, O)                          b (O,)   y (O, N)
A conv layer with ``sharedBiases=0`` has a bias per filter and position, b (F, Ho, Wo), as local
layers always have (cuda-convnet). Both add it to y viewed as (F*Ho*Wo, N).
``filters`` in a conv or local section counts the filters *per group*, as in cuda-convnet: a
layer with filters=128 and groups=2 has 256 filters in all; group g reads input channels
[g*C/groups, (g+1)*C/groups).

Several inputs (cuda-convnet2): ``inputs=a,b`` gives the layer one weight tensor per input and
one bias; the output is the sum of what each input's weights make of it, plus the bias. This is
how the paper's conv3 and FC layers read both towers. The per-input keys (those parsed with
config.per_input below) take a comma list, one value per input, or one value for all inputs.
The weights of a layer with one input are named ``w`` (as they always were); with several inputs
``w0``, ``w1``, ... in the order of ``inputs=``, and their learning rates ``epsW.0``,
``epsW.1``, ...; the bias is ``b``.
"""
import math

from .. import ops, rng
from ..config import (REQUIRED, as_bool, as_float, as_int, parse_schedule, per_input,
                      unsupported)
from ..tensor import empty
from .base import BatchBuffer, Layer, Param, register


def _update_period(spec, key):
    if as_int(spec, key, lo=1) != 1:
        raise unsupported(spec, key, "gradient accumulation over several batches (updatePeriod "
                                     "> 1)", "use 1")
    return 1


def _wball(spec, key):
    if as_float(spec, key) != 0.0:
        raise unsupported(spec, key, "the weight-ball constraint (wball > 0)", "use 0")
    return 0.0


def _rand_sparse(spec, key):
    # cuda-convnet's random sparse filter-to-channel connectivity (with filterChannels);
    # cuda-convnet2 writes randSparse=0 and ignores the key.
    if as_bool(spec, key):
        raise unsupported(spec, key, "random sparse connectivity (randSparse=1)", "use 0")
    return False


def _int(lo):
    return lambda spec, key: as_int(spec, key, lo=lo)


def _float(lo=None):
    return lambda spec, key: as_float(spec, key, lo=lo)


LEARNING_KEYS = {
    "epsW": (per_input(parse_schedule), REQUIRED), "epsB": (parse_schedule, REQUIRED),
    "momW": (per_input(_float(0.0)), REQUIRED), "momB": (_float(0.0), REQUIRED),
    "wc": (per_input(_float(0.0)), REQUIRED), "wball": (per_input(_wball), None),
    "updatePeriod": (_update_period, 1),
}


class WeightLayer(Layer):
    PARAM_KEYS = frozenset(LEARNING_KEYS)
    BWD_READS_Y = False
    FUSES_RELU = True
    SPLITS_PASSES = True
    INPUTS = (1, 64)
    # Defaults of the per-input keys, given to every input.
    PER_INPUT_DEFAULTS = {"initW": 0.01, "wball": 0.0}
    relu_bias_done = False  # see backward

    def __init__(self, spec, neurons):
        super().__init__(spec, neurons)
        n = len(self.input_names)
        for key, default in self.PER_INPUT_DEFAULTS.items():
            if not spec.has(key):
                self.cfg[key] = (default,) * n

    def _make_params(self, w_shapes, b_shape):
        several = len(w_shapes) > 1
        self.ws = [Param(self, f"w{i}" if several else "w", shape, "epsW", "momW", "wc", index=i)
                   for i, shape in enumerate(w_shapes)]
        self.b = Param(self, "b", b_shape, "epsB", "momB", None)  # biases get no weight decay
        self.params = self.ws + [self.b]

    def allocate(self, batch, device):
        for p in self.params:
            p.allocate(device)

    def init_params(self, seed):
        # Weights ~ N(0, initW^2) from the counter-based RNG on the host, one stream per weight
        # tensor, so a seed gives the same net on every backend and any device placement. The
        # weights of input 0 use the layer's stream, input i the stream i << 16 above it.
        for i, w in enumerate(self.ws):
            host = ops.gaussian_init(w.shape, self.cfg["initW"][i], seed,
                                     rng.RNG_INIT | (i << 16) | self.index)
            w.value.copy_(host)
        ops.fill_(self.b.value, self.cfg["initB"])

    def backward(self, dy, xs, y, dxs, accs, n, ctx, part=None):
        # The forward applied the bias and ReLU in its store (fused_neuron): the backward masks
        # dy and sums the bias gradient in one pass over dy (relu_bias_bwd), where neuron_bwd
        # then bias_bwd made two (the same mask bits). relu_bias_done: the layer's only
        # consumer, a pool, did both in its own backward pass (set by the net; ops.pool_bwd's
        # relu_bias). In two parts, "inputs" masks dy first (neuron_bwd) and "rest" runs
        # relu_bias_bwd on the masked dy, which changes none of its bits: the bias gradient is
        # summed in the same order as in one call, so the parts give the same bits.
        if not self.fused_neuron:
            return super().backward(dy, xs, y, dxs, accs, n, ctx, part)
        extra = {} if part is None else {"weights": part == "rest"}
        if self.relu_bias_done:
            return self.bwd(dy, xs, None, dxs, accs, n, ctx, bias=False, **extra)
        if part == "inputs":
            return super().backward(dy, xs, y, dxs, accs, n, ctx, part)
        ops.relu_bias_bwd(dy, y, self.b.grad)
        self.bwd(dy, xs, None, dxs, accs, n, ctx, bias=False, **extra)


CONV_DEFAULTS = {"padding": 0, "stride": 1, "groups": 1, "channels": None,
                 "randSparse": False}


def _stack(parts, whole):
    """parts side by side along the first axis of whole (their channels: contiguous blocks)."""
    at = 0
    for p in parts:
        whole.narrow(at, p.shape[0]).copy_(p)
        at += p.shape[0]


def _unstack(whole, parts):
    at = 0
    for p in parts:
        p.copy_(whole.narrow(at, p.shape[0]))
        at += p.shape[0]


@register
class ConvLayer(WeightLayer):
    TYPE = "conv"
    STACKS_INPUTS = True  # the backward pass may take several inputs as one (_stackable)
    KEYS = {"channels": (per_input(_int(1)), None),
            "filters": (per_input(_int(1)), REQUIRED),
            "filterSize": (per_input(_int(1)), REQUIRED),
            "padding": (per_input(_int(0)), None),
            "stride": (per_input(_int(1)), None),
            "groups": (per_input(_int(1)), None),
            "randSparse": (per_input(_rand_sparse), None),
            "sharedBiases": (as_bool, True),
            "initW": (per_input(_float(0.0)), None), "initB": (_float(), 0.0),
            **LEARNING_KEYS}
    PER_INPUT_DEFAULTS = {**WeightLayer.PER_INPUT_DEFAULTS, **CONV_DEFAULTS}
    FWD, BWD_DATA, BWD_WEIGHTS = "conv_fwd", "conv_bwd_data", "conv_bwd_weights"
    BIAS_NOTE = " biases per position"  # the layer table's note for sharedBiases=0

    def infer(self, in_shapes):
        cfg, outs = self.cfg, []
        for i, shape in enumerate(in_shapes):
            if len(shape) != 3:
                raise self.shape_error(f"a {self.TYPE} layer needs images (channels, rows, cols) "
                                       f"as input, got shape {shape}", i)
            c, h, w = shape
            if cfg["channels"][i] is not None and cfg["channels"][i] != c:
                raise self.shape_error(f"has {c} channels but {self.name} says channels="
                                       f"{cfg['channels'][i]}", i)
            g, fs, pad = cfg["groups"][i], cfg["filterSize"][i], cfg["padding"][i]
            if c % g:
                raise self.shape_error(f"{c} channels cannot be split into groups={g}", i)
            if h + 2 * pad < fs or w + 2 * pad < fs:
                raise self.shape_error(f"image {h}x{w} (padding {pad}) is smaller than the "
                                       f"{fs}x{fs} filter", i)
            st = cfg["stride"][i]
            outs.append((cfg["filters"][i] * g, ops.conv_out_size(h, fs, pad, st),
                         ops.conv_out_size(w, fs, pad, st)))
        # The inputs' outputs are summed: filters x groups and the output size must agree.
        for i, out in enumerate(outs[1:], 1):
            if out[0] != outs[0][0]:
                raise self.spec.error("filters", f"input {i} ({self.input_names[i]!r}) makes "
                                                 f"{out[0]} filters (filters x groups), input 0 "
                                                 f"makes {outs[0][0]}: the outputs are summed, "
                                                 "so they must agree")
            if out[1:] != outs[0][1:]:
                raise self.shape_error(f"makes {out[1]}x{out[2]} outputs (filterSize "
                                       f"{cfg['filterSize'][i]}, padding {cfg['padding'][i]}, "
                                       f"stride {cfg['stride'][i]}) but input "
                                       f"{self.input_names[0]!r} makes {outs[0][1]}x"
                                       f"{outs[0][2]}: the outputs are summed, so they must agree",
                                       i)
        self.filters, self.out_hw = outs[0][0], outs[0][1:]
        self._make_params([self._weight_shape(i, s) for i, s in enumerate(in_shapes)],
                          (self.filters,) if self.shared_biases else outs[0])
        self.stacked_shape = self._stackable(in_shapes)
        return outs[0]

    def _stackable(self, in_shapes):
        """(C, H, W) of the inputs stacked along their channels where the backward pass can take
        them as one input of C channels (one weight tensor per input stacked alike): plain conv
        inputs of one image size and geometry, groups=1. Else None."""
        c = self.cfg
        if not self.STACKS_INPUTS or len(in_shapes) < 2 or any(
                s[1:] != in_shapes[0][1:] for s in in_shapes):
            return None
        if any(len(set(c[k])) > 1 for k in ("filterSize", "padding", "stride")) or \
                set(c["groups"]) != {1}:
            return None
        return (sum(s[0] for s in in_shapes),) + tuple(in_shapes[0][1:])

    @property
    def input_grads_together(self):
        # The input gradients come from one call (_stacked_input_grads), so the two-device
        # executor computes them in one part of the backward pass (Net._bwd_fn).
        return self.stacked_shape is not None

    def allocate(self, batch, device):
        super().allocate(batch, device)
        if self.stacked_shape is None:
            return
        # Allocated once: the stacked images and their gradient, the stacked weights and theirs.
        c, fs = self.stacked_shape[0], self.cfg["filterSize"][0]
        self._x_stack = BatchBuffer(self.stacked_shape, batch, device)
        self._dx_stack = BatchBuffer(self.stacked_shape, batch, device)
        self._w_stack = empty((c, fs, fs, self.filters), device=device)
        self._dw_stack = empty((c, fs, fs, self.filters), device=device)

    @property
    def shared_biases(self):
        return self.cfg["sharedBiases"]

    def _weight_shape(self, i, in_shape):
        g, fs = self.cfg["groups"][i], self.cfg["filterSize"][i]
        return (in_shape[0] // g, fs, fs, self.filters)

    def flops(self):
        pixels = math.prod(self.out_hw)
        macs = sum(math.prod(w.shape[-4:-1]) for w in self.ws)
        return 2 * self.filters * pixels * macs + self.filters * pixels

    def _geometry(self, i):
        c = self.cfg
        return dict(padding=c["padding"][i], stride=c["stride"][i], groups=c["groups"][i])

    def _flat_bias(self, t):
        # Per-position biases (F, Ho, Wo) are added to y viewed as (F*Ho*Wo, n).
        return t if self.shared_biases else t.reshape(math.prod(t.shape[:3]), *t.shape[3:])

    @property
    def fused_neuron(self):
        # The op's epilogue adds one bias per filter: per-position biases come after the op.
        return self.shared_biases and super().fused_neuron

    def fwd(self, xs, y, n, ctx, relu=False, terms=None):
        # The first term (input) writes y, the others add to it. The last adds the one bias per
        # filter and applies the fused ReLU as it stores y; per-position biases are added
        # afterwards. terms: see Layer.forward.
        order, start, stop = terms or (range(len(xs)), 0, len(xs))
        last = len(order) - 1
        for k in range(start, stop):
            i = order[k]
            epilogue = dict(b=self.b.value, relu=relu) if self.shared_biases and k == last else {}
            getattr(ops, self.FWD)(xs[i], self.ws[i].value, out=y, accumulate=k > 0, **epilogue,
                                   **self._geometry(i))
        if not self.shared_biases and stop == len(order):
            ops.bias_fwd(self._flat_bias(y), self._flat_bias(self.b.value))

    def bwd(self, dy, xs, y, dxs, accs, n, ctx, weights=True, bias=True):
        # weights=False: the input gradients in dxs only (see Layer.backward's parts);
        # bias=False: the bias gradient is already done (WeightLayer.backward).
        if weights and bias:
            ops.bias_bwd(self._flat_bias(dy), out=self._flat_bias(self.b.grad))
        stacked = self.stacked_shape is not None
        if weights and stacked:
            self._stacked_weight_grads(xs, dy, n)
        # An input gradient added to another consumer's (accs) is computed alone: its kernel
        # adds as it stores, which a stacked call followed by a separate add would not repeat.
        data_stacked = stacked and None not in dxs and not any(accs)
        if data_stacked:
            self._stacked_input_grads(dy, dxs, n)
        for i, (x, w) in enumerate(zip(xs, self.ws)):
            geo = self._geometry(i)
            if weights and not stacked:
                getattr(ops, self.BWD_WEIGHTS)(x, dy, self.cfg["filterSize"][i], out=w.grad,
                                               **geo)
            if dxs[i] is not None and not data_stacked:
                getattr(ops, self.BWD_DATA)(dy, w.value, x.shape, out=dxs[i], accumulate=accs[i],
                                            **geo)

    # Stacked inputs: one call with the inputs' channels side by side instead of one call per
    # input. The input gradient and weight gradient of each channel are reduced over the same
    # terms in the same order either way (over filters and taps, over images and positions), so
    # each input's part has the bits of its own call; the stacked call transforms dy once (not
    # once per input) and runs GEMMs twice as deep, paying for copies of the images and
    # weights in and the gradients out.
    def _stacked_weight_grads(self, xs, dy, n):
        x_stack = self._x_stack.view(n)
        _stack(xs, x_stack)
        ops.conv_bwd_weights(x_stack, dy, self.cfg["filterSize"][0], out=self._dw_stack,
                             **self._geometry(0))
        _unstack(self._dw_stack, [w.grad for w in self.ws])

    def _stacked_input_grads(self, dy, dxs, n):
        _stack([w.value for w in self.ws], self._w_stack)
        dx_stack = self._dx_stack.view(n)
        ops.conv_bwd_data(dy, self._w_stack, dx_stack.shape, out=dx_stack, **self._geometry(0))
        _unstack(dx_stack, dxs)

    def describe(self):
        parts = []
        for i in range(len(self.ws)):
            c = {k: self.cfg[k][i] for k in ("filterSize", "stride", "padding", "groups")}
            s = f"{c['filterSize']}x{c['filterSize']}/{c['stride']}"
            s += f" pad {c['padding']}" if c["padding"] else ""
            s += f" groups {c['groups']}" if c["groups"] > 1 else ""
            parts.append(s)
        return " + ".join(parts) + ("" if self.shared_biases else self.BIAS_NOTE)


@register
class LocalLayer(ConvLayer):
    """cuda-convnet's locally-connected layer: the keys of a conv layer, but every output
    position has its own filters (w (Ho, Wo, C/groups, fs, fs, F)) and its own biases."""
    TYPE = "local"
    KEYS = {k: v for k, v in ConvLayer.KEYS.items() if k != "sharedBiases"}
    FWD, BWD_DATA, BWD_WEIGHTS = "local_fwd", "local_bwd_data", "local_bwd_weights"
    BIAS_NOTE = ""  # always per position
    STACKS_INPUTS = False  # weights per position: not one conv call

    @property
    def shared_biases(self):
        return False

    def _weight_shape(self, i, in_shape):
        c = self.cfg
        return ops.local_weight_shape(in_shape + (1,), self.filters, c["filterSize"][i],
                                      padding=c["padding"][i], stride=c["stride"][i],
                                      groups=c["groups"][i])


@register
class FCLayer(WeightLayer):
    TYPE = "fc"
    KEYS = {"outputs": (_int(1), REQUIRED),
            "initW": (per_input(_float(0.0)), None), "initB": (_float(), 0.0),
            **LEARNING_KEYS}

    def infer(self, in_shapes):
        self.in_features = [math.prod(s) for s in in_shapes]
        outputs = self.cfg["outputs"]
        self._make_params([(f, outputs) for f in self.in_features], (outputs,))
        return (outputs,)

    def flops(self):
        return 2 * sum(self.in_features) * self.cfg["outputs"] + self.cfg["outputs"]

    def fwd(self, xs, y, n, ctx, relu=False, terms=None):
        # The first term (input) writes y, the others add to it; the last adds the bias and
        # applies the fused ReLU as it stores y. terms: see Layer.forward.
        order, start, stop = terms or (range(len(xs)), 0, len(xs))
        last = len(order) - 1
        for k in range(start, stop):
            i = order[k]
            ops.fc_fwd(xs[i].reshape(self.in_features[i], n), self.ws[i].value,
                       self.b.value if k == last else None, out=y, accumulate=k > 0,
                       relu=relu and k == last)

    def bwd(self, dy, xs, y, dxs, accs, n, ctx, weights=True, bias=True):
        # weights=False: the input gradients in dxs only (see Layer.backward's parts);
        # bias=False: the bias gradient is already done (WeightLayer.backward).
        if weights and bias:
            ops.bias_bwd(dy, out=self.b.grad)
        for i, (x, w, f) in enumerate(zip(xs, self.ws, self.in_features)):
            if weights:
                ops.fc_bwd_weights(x.reshape(f, n), dy, out=w.grad)
            if dxs[i] is not None:
                ops.fc_bwd_data(dy, w.value, out=dxs[i].reshape(f, n), accumulate=accs[i])
