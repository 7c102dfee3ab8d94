"""What every layer type shares: key parsing, batch buffers, parameters, the fused neuron.

A layer sees per-image shapes: (C, H, W) for images, (F,) for FC activations, () for labels.
Its buffers hold the batch index innermost, as the kernels want: (C, H, W, N), (F, N), (N,).
They are allocated once for the largest batch N; a smaller batch of n images (the last test
batch, a multiview batch) uses the contiguous prefix of the same memory viewed as (..., n).
"""
import math

import numpy as np

from .. import ops
from ..config import (CUDA_CONVNET_KEYS, REQUIRED, TUNING_KEYS, ConfigError, LayerSpec, as_int,
                      as_names, parse_neuron, unsupported)
from ..tensor import empty

__all__ = ["BatchBuffer", "Layer", "Param", "REGISTRY", "register"]

REGISTRY = {}
NEURONS_READING_X = ("abs", "square")  # derivative needs the input (csrc/common/neuron.h)


def register(cls):
    REGISTRY[cls.TYPE] = cls
    return cls


class BatchBuffer:
    """A (*shape, N) tensor allocated once; ``view(n)`` is its (*shape, n) prefix (no copy)."""

    def __init__(self, shape, batch, device, dtype=np.float32):
        self.shape, self.batch, self.device = tuple(shape), batch, device
        self.per_image = math.prod(self.shape)
        self.flat = empty((self.per_image * batch,), dtype, device)
        self._views = {}

    def view(self, n):
        v = self._views.get(n)
        if v is None:
            if not 0 < n <= self.batch:
                raise ValueError(f"batch of {n} images does not fit buffers built for {self.batch}")
            v = self.flat.narrow(0, self.per_image * n).reshape(self.shape + (n,))
            self._views[n] = v
        return v


class Param:
    """A weight tensor with its gradient, momentum and learning hyperparameters.
    ``eps`` is a config.Schedule; ``mom`` the momentum; ``wc`` the weight decay (L2, as in the
    paper's update rule), read from the layer's config keys given. ``index`` picks the entry of
    per-input values (the weights of input ``index``); None for a value given once per layer.
    ``eps_key`` names the learning rate in checkpoints: 'epsW' for a layer with one input (the
    name checkpoints have always used), 'epsW.1' for the weights of input 1 of a layer with
    several inputs."""

    def __init__(self, layer, name, shape, eps_key, mom_key, wc_key, index=None):
        self.layer, self.name, self.shape = layer, name, tuple(shape)
        self.index = index
        self.config_keys = (eps_key, mom_key, wc_key)
        several = index is not None and len(layer.input_names) > 1
        self.eps_key = f"{eps_key}.{index}" if several else eps_key
        self.value = self.grad = self.inc = None

    @property
    def full_name(self):
        return f"{self.layer.name}.{self.name}"

    def allocate(self, device):
        self.value = empty(self.shape, device=device)
        self.grad = empty(self.shape, device=device)
        self.inc = empty(self.shape, device=device)
        ops.fill_(self.inc, 0.0)

    def _hyper(self, which):
        key = self.config_keys[which]
        if key is None:
            return 0.0
        value = self.layer.cfg[key]
        return value if self.index is None else value[self.index]

    @property
    def eps(self):
        return self._hyper(0)

    @property
    def momentum(self):
        return self._hyper(1)

    @property
    def decay(self):
        return self._hyper(2)


def _gpu_list(spec, key):
    """'1' -> (1,); '0,1,2,3' -> (0, 1, 2, 3): the devices of the layer's replicas
    (cuda-convnet2's data parallelism), each a different device."""
    items = [i.strip() for i in spec.text(key).split(",")]
    devices = []
    for item in items:
        one = LayerSpec(spec.name, spec.index, spec.file)
        one.values[key] = (item, spec.values[key][1])
        devices.append(as_int(one, key, lo=0))
    if len(set(devices)) != len(devices):
        raise spec.error(key, f"the replicas of a layer run on different devices, got "
                              f"{spec.text(key)!r}")
    return tuple(devices)


class Layer:
    """Base of the layer types. Subclasses set TYPE, KEYS (key -> (parser, default); default
    REQUIRED for mandatory keys), PARAM_KEYS (keys of the params file, re-read on resume),
    INPUTS (min, max number of inputs) and implement infer / fwd / bwd."""

    TYPE = None
    KEYS = {}
    PARAM_KEYS = frozenset()
    INPUTS = (1, 1)
    NEURON = True          # accepts neuron= (applied to the output, as in cuda-convnet)
    BWD_READS_Y = True     # bwd() reads the layer's output (before the neuron)
    FUSES_RELU = False     # fwd(..., relu=True) applies a ReLU as it stores y (conv, fc)
    SPLITS_PASSES = False  # forward(..., terms=) and backward(..., part=) exist (conv, fc)
    input_grads_together = False  # backward part "inputs" computes every input gradient
    is_data = is_cost = False

    def __init__(self, spec, neurons):
        self.name, self.index, self.spec = spec.name, spec.index, spec
        # gpu: a tuple of device indices, one per replica; None = the replicas of its first
        # input (cuda-convnet2's rule; a data layer follows its consumers), resolved when the
        # net places its layers.
        common = {"type": (None, REQUIRED), "gpu": (_gpu_list, None)}
        if self.INPUTS[1] > 0:
            common["inputs"] = (as_names, REQUIRED)
        if self.NEURON:
            common["neuron"] = (lambda s, k: parse_neuron(s, k, neurons), None)
        known = {**common, **self.KEYS}
        for key in spec.values:
            if key in CUDA_CONVNET_KEYS and key not in known:
                raise unsupported(spec, key, f"key {key!r}")
            if key not in known and key not in TUNING_KEYS:
                raise spec.error(key, f"unknown key for a {self.TYPE} layer (a typo?); known "
                                      f"keys: {', '.join(sorted(known))}")
        self.cfg = {}
        for key, (parse, default) in known.items():
            if key == "type":
                continue
            if spec.has(key):
                self.cfg[key] = parse(spec, key)
            elif default is REQUIRED:
                raise spec.error(key, f"a {self.TYPE} layer needs this key")
            else:
                self.cfg[key] = default
        self.input_names = self.cfg.get("inputs", [])
        lo, hi = self.INPUTS
        if not lo <= len(self.input_names) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise spec.error("inputs", f"a {self.TYPE} layer takes {want} input(s), got "
                                       f"{len(self.input_names)}")
        self.neuron = self.cfg.get("neuron")
        self.inputs = []         # producer layers, set by the net
        self.in_shapes = []
        self.out_shape = None
        self.device = None
        self.slice = 0           # the slice of the batch this instance runs on (replicas)
        self.params = []
        self.pre = self.dpre = None

    # -- what a layer type implements --------------------------------------------------------
    def infer(self, in_shapes):
        """Checks the input shapes and returns the per-image output shape."""
        raise NotImplementedError

    def flops(self):
        """Forward floating-point operations per image (a multiply-add counts 2)."""
        return 0

    def allocate(self, batch, device):
        """Allocates parameters and internal buffers (called once, after infer)."""

    def fwd(self, xs, y, n, ctx):
        raise NotImplementedError

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        """Writes (or adds, when accs[i]) the input gradients into dxs[i] (None: not needed)
        and the parameter gradients into Param.grad."""
        raise NotImplementedError

    def init_params(self, seed):
        """Fills the parameters (reproducible from the seed, the same on every backend)."""

    # -- shared machinery ---------------------------------------------------------------------
    def shape_error(self, message, input_index=None):
        key = "inputs"
        if input_index is not None:
            message = f"input {self.input_names[input_index]!r}: {message}"
        return ConfigError(message, self.spec.values.get(key, (None, self.spec.file))[1],
                           self.name, key)

    @property
    def neuron_in_place(self):
        """The neuron can overwrite the layer's output (and its gradient) when the layer's own
        backward pass does not read its output (conv, fc) and the neuron's derivative is a
        function of its output (all kinds but abs and square, which need the input): saves two
        buffers and two passes over memory per step."""
        return (self.neuron is not None and not self.BWD_READS_Y
                and self.neuron[0] not in NEURONS_READING_X)

    @property
    def fused_neuron(self):
        """The forward pass applies the layer's neuron itself, in the GEMM's epilogue, with the
        bias (conv and fc with neuron=relu, in place): one pass over y fewer, the same bits."""
        return self.FUSES_RELU and self.neuron_in_place and self.neuron[0] == "relu"

    def build(self, batch, device):
        self.device = device
        self.allocate(batch, device)
        if self.neuron and not self.neuron_in_place:
            self.pre = BatchBuffer(self.out_shape, batch, device)
            self.dpre = BatchBuffer(self.out_shape, batch, device)

    def forward(self, xs, y, n, ctx, terms=None):
        """The layer's forward pass: all of it (terms None), or, for a layer that SPLITS_PASSES
        (its output sums one term per input), terms (order, start, stop): the terms of the
        inputs order[start:stop] of the sum taken in `order` (the first term writes y, the
        others add to it); the call that ends the sum adds the bias and applies the neuron.
        The two-device executor sums the terms of a layer's own device's inputs first, while
        the other inputs are still on their way."""
        extra = {} if terms is None else {"terms": terms}
        ends = terms is None or terms[2] == len(terms[0])
        if not self.neuron:
            return self.fwd(xs, y, n, ctx, **extra)
        kind, a, b = self.neuron
        if self.fused_neuron:
            return self.fwd(xs, y, n, ctx, relu=True, **extra)
        if self.neuron_in_place:
            self.fwd(xs, y, n, ctx, **extra)
            if ends:
                ops.neuron_fwd(y, kind, a, b, out=y)
            return
        pre = self.pre.view(n)
        self.fwd(xs, pre, n, ctx, **extra)
        if ends:
            ops.neuron_fwd(pre, kind, a, b, out=y)

    def backward(self, dy, xs, y, dxs, accs, n, ctx, part=None):
        """The layer's backward pass: all of it (part None), or, for a layer that
        SPLITS_PASSES, in two calls: part "inputs" (the neuron's gradient and the input
        gradients asked for in dxs, no parameter gradient), then part "rest" (the parameter
        gradients and the input gradients asked for then). The two-device executor computes
        first the gradients another device waits for."""
        extra = {} if part is None else {"weights": part == "rest"}
        if not self.neuron:
            return self.bwd(dy, xs, y, dxs, accs, n, ctx, **extra)
        kind, a, b = self.neuron
        if self.neuron_in_place:
            # x is not read for these kinds: y stands in for it. dy is this layer's own
            # gradient buffer, free to be overwritten.
            if part != "rest":
                ops.neuron_bwd(dy, y, y, kind, a, b, out=dy)
            return self.bwd(dy, xs, None, dxs, accs, n, ctx, **extra)
        pre, dpre = self.pre.view(n), self.dpre.view(n)
        if part != "rest":
            ops.neuron_bwd(dy, pre, y, kind, a, b, out=dpre)
        self.bwd(dpre, xs, pre, dxs, accs, n, ctx, **extra)

    def structure(self):
        """The definition keys (not the params-file ones), to check a resumed config."""
        return {k: v[0] for k, v in self.spec.values.items()
                if k not in self.PARAM_KEYS and k not in TUNING_KEYS}

    def describe(self):
        """A short text of the layer's settings for the layer table."""
        return ""
