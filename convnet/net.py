"""The layer graph: a DAG built from a config, with shapes inferred and checked, every buffer
allocated once, and forward / backward / update over the kernels.

Devices. Each layer runs on one device: config key ``gpu`` (an index; by default the device of
the layer's first input, 0 for data layers, as in cuda-convnet2) mapped onto the run's device
kind (``--device emu`` with gpu=1 -> emu:1; every layer is on the one CPU device when the run is
on ``cpu``). An activation read by a layer on another device is copied explicitly
(``Tensor.copy_``, peer to peer) into a buffer on the consumer's device allocated at build time;
the gradient goes back the same way, into a staging buffer on the producer's device, and is
summed there with the gradients of the producer's other consumers.

Gradient sums. A layer read by several consumers receives one gradient per consumer. The first
consumer (in backward order) writes the producer's gradient buffer, the others add to it
(``accumulate=True`` in the backward ops), so no buffer is ever zeroed.
"""
import math
import time

import numpy as np

from . import ops
from .config import ConfigError
from .device import Device, DeviceError, backend
from .layers import BatchBuffer, make_layer
from .tensor import from_numpy

__all__ = ["Net", "Context"]


class Context:
    """What a forward/backward pass needs besides tensors: training or testing, the global step
    (dropout masks are a function of it) and the run's seed."""

    def __init__(self, train, step, seed):
        self.train, self.step, self.seed = train, step, seed


class _Edge:
    """Where the gradient for input i of a layer goes: the producer `target`, written directly
    (same device) or through `stage` (a buffer on the consumer's device) and then copied to the
    target's device; `accumulate` says whether the target already holds another gradient."""

    def __init__(self, target, accumulate, stage=None, gsum=None):
        self.target, self.accumulate, self.stage, self.gsum = target, accumulate, stage, gsum


class Net:
    """Build with ``Net(config, image_shape=(3, 224, 224), device="cpu", batch_size=128, seed=0)``.

    ``config`` is a convnet.config.NetConfig. ``image_shape`` is what the data source delivers
    per image. Buffers are allocated for ``batch_size`` images; smaller batches use a prefix."""

    def __init__(self, config, *, image_shape, device="cpu", batch_size=128, seed=0):
        self.config, self.batch_size, self.seed = config, int(batch_size), int(seed)
        self.image_shape = tuple(image_shape)
        self.run_device = Device(device)
        self.layers = [make_layer(spec, self._neurons()) for spec in config.layers]
        self.by_name = {L.name: L for L in self.layers}
        self._link()
        self.order = self._toposort()
        self._place()
        self._infer_shapes()
        self._plan_backward()
        self._allocate()
        self.init_params(self.seed)
        self.timings = None  # {(layer, "fwd" | "bwd" | "update"): seconds} when profiling

    @staticmethod
    def _neurons():
        return set(ops.neuron_kinds())

    # -- building ---------------------------------------------------------------------------
    def _link(self):
        self.consumers = {L.name: [] for L in self.layers}
        for L in self.layers:
            for name in L.input_names:
                if name not in self.by_name:
                    raise L.spec.error("inputs", f"no layer named {name!r} in the net")
                if name == L.name:
                    raise L.spec.error("inputs", "a layer cannot read its own output")
                P = self.by_name[name]
                if P.is_cost:
                    raise L.spec.error("inputs", f"{name!r} is a cost layer: it has no output")
                L.inputs.append(P)
                self.consumers[name].append(L)
        self.data_layers = [L for L in self.layers if L.is_data]
        self.costs = [L for L in self.layers if L.is_cost]
        if not any(not L.is_labels for L in self.data_layers):
            raise ConfigError("the net has no image input (a layer with type=data, dataIdx=0)",
                              self.config.def_path)

    def _toposort(self):
        # Kahn's algorithm, keeping file order among ready layers.
        pending = {L.name: len(set(L.input_names)) for L in self.layers}
        order, ready = [], [L for L in self.layers if pending[L.name] == 0]
        while ready:
            L = ready.pop(0)
            order.append(L)
            for C in dict.fromkeys(self.consumers[L.name]):
                pending[C.name] -= 1
                if pending[C.name] == 0:
                    ready.append(C)
            ready.sort(key=lambda x: x.index)
        if len(order) != len(self.layers):
            stuck = [L.name for L in self.layers if pending[L.name] > 0]
            raise ConfigError(f"the layers {', '.join(stuck)} form a cycle through inputs=",
                              self.config.def_path)
        return order

    def _place(self):
        kind = self.run_device
        backend(kind)  # DeviceError naming the device if it does not exist
        for L in self.order:
            if L.cfg["gpu"] is None:  # where its first input runs, as in cuda-convnet2
                L.cfg["gpu"] = L.inputs[0].cfg["gpu"] if L.inputs else 0
            gpu = L.cfg["gpu"]
            if kind.type == "cpu":
                L.device = Device("cpu")
                continue
            L.device = Device(f"{kind.type}:{kind.index + gpu}")
            try:
                backend(L.device)
            except DeviceError as e:
                raise L.spec.error("gpu", f"gpu={gpu} with the run on {kind}: {e}") from None
        self.devices = sorted({L.device for L in self.layers}, key=str)

    def _infer_shapes(self):
        for L in self.order:
            if L.is_data:
                L.out_shape = () if L.is_labels else self.image_shape
                continue
            L.in_shapes = [P.out_shape for P in L.inputs]
            for i, P in enumerate(L.inputs):
                if P.is_data and P.is_labels and not L.is_cost:
                    raise L.shape_error("labels can only feed a cost layer", i)
            L.out_shape = tuple(L.infer(L.in_shapes))
            if L.out_shape and min(L.out_shape) < 1:
                raise L.shape_error(f"output shape {L.out_shape} is empty")
        self.params = [p for L in self.order for p in L.params]
        self.total_params = sum(math.prod(p.shape) for p in self.params)
        self.total_flops = sum(L.flops() for L in self.order if not L.is_data)

    def _plan_backward(self):
        requires = {}
        for L in self.order:
            requires[L.name] = bool(L.params) or any(requires[P.name] for P in L.inputs)
        on_path = {}
        for L in reversed(self.order):
            on_path[L.name] = L.is_cost or any(on_path[C.name] for C in self.consumers[L.name])
        self.fused = {}  # cost name -> the softmax layer whose gradient it computes
        for cost in self.costs:
            probs = cost.inputs[1]
            if probs.TYPE != "softmax" or self.consumers[probs.name] != [cost]:
                if probs.TYPE != "softmax":
                    raise cost.shape_error(f"{probs.name!r} is a {probs.TYPE} layer; "
                                           "cost.logreg reads the output of a softmax layer", 1)
                others = [C.name for C in self.consumers[probs.name] if C is not cost]
                raise cost.shape_error(f"softmax {probs.name!r} also feeds {', '.join(others)}: "
                                       "a trained softmax must feed only its cost.logreg "
                                       "(the gradient is computed fused with the cost)", 1)
            self.fused[cost.name] = probs
        fused_softmax = {S.name for S in self.fused.values()}
        self.active = {L.name: requires[L.name] and on_path[L.name] and not L.is_data
                       and L.name not in fused_softmax for L in self.order}
        # Gradient edges, in backward order; the first writer of a target overwrites it.
        written = {}
        self.edges = {}
        for L in reversed(self.order):
            if not self.active[L.name]:
                continue
            edges = []
            for i, P in enumerate(L.inputs):
                if L.is_cost and i == 1:
                    P = self.fused[L.name].inputs[0]
                elif L.is_cost:
                    edges.append(None)
                    continue
                if not self.active.get(P.name) or P.is_data:
                    edges.append(None)
                    continue
                edges.append(_Edge(P, written.get(P.name, 0) > 0))
                written[P.name] = written.get(P.name, 0) + 1
            self.edges[L.name] = edges
        self.has_dy = {name for name, k in written.items() if k}
        self.trained = [p for p in self.params if self.active[p.layer.name]]
        for L in self.order:
            if self.active[L.name] and not L.is_cost and L.name not in self.has_dy:
                raise AssertionError(f"layer {L.name} is trained but receives no gradient")

    def _allocate(self):
        N = self.batch_size
        self.y, self.dy, self.remote = {}, {}, {}
        for L in self.order:
            L.build(N, L.device)
            if not L.is_cost:
                dtype = np.int32 if L.is_data and L.is_labels else np.float32
                self.y[L.name] = BatchBuffer(L.out_shape, N, L.device, dtype)
            if L.name in self.has_dy:
                self.dy[L.name] = BatchBuffer(L.out_shape, N, L.device)
        # Activations read on another device: one copy per (producer, device).
        for L in self.order:
            for P in L.inputs:
                if P.device != L.device:
                    key = (P.name, L.device)
                    if key not in self.remote:
                        dtype = np.int32 if P.is_data and P.is_labels else np.float32
                        self.remote[key] = BatchBuffer(P.out_shape, N, L.device, dtype)
        # Gradients crossing devices: staged on the consumer's device, summed on the producer's.
        gsum = {}
        for L in self.order:
            for e in self.edges.get(L.name, []):
                if e is None or e.target.device == L.device:
                    continue
                e.stage = BatchBuffer(e.target.out_shape, N, L.device)
                if e.accumulate:
                    if e.target.name not in gsum:
                        gsum[e.target.name] = BatchBuffer(e.target.out_shape, N, e.target.device)
                    e.gsum = gsum[e.target.name]

    def init_params(self, seed):
        for L in self.order:
            L.init_params(seed)

    # -- running ----------------------------------------------------------------------------
    def _input(self, L, i, n):
        P = L.inputs[i]
        if P.device == L.device:
            return self.y[P.name].view(n)
        return self.remote[(P.name, L.device)].view(n)

    def forward(self, images, labels, *, train, step=0):
        """Runs the net on a batch: images float32 (C, H, W, n), labels int32 (n,) (numpy).
        Returns {cost layer name: stats} (summed log-probability and errors over the batch)."""
        n = images.shape[-1]
        if n > self.batch_size:
            raise ValueError(f"batch of {n} images, but the net was built for at most "
                             f"{self.batch_size}")
        ctx = Context(train, step, self.seed)
        for L in self.order:
            t0 = time.perf_counter() if self.timings is not None else 0.0
            if L.is_data:
                src = labels if L.is_labels else images
                self.y[L.name].view(n).copy_(from_numpy(np.ascontiguousarray(src)))
            elif L.is_cost:
                L.forward([self._input(L, i, n) for i in range(len(L.inputs))], None, n, ctx)
            else:
                L.forward([self._input(L, i, n) for i in range(len(L.inputs))],
                          self.y[L.name].view(n), n, ctx)
            for (name, dev), buf in self.remote.items():
                if name == L.name:
                    buf.view(n).copy_(self.y[name].view(n))
            if self.timings is not None:
                self._time(L.name, "fwd", t0)
        self._n, self._ctx = n, ctx
        return {C.name: C.stats for C in self.costs}

    def backward(self):
        """Gradients of the mean cost over the last forward batch, into every Param.grad."""
        n, ctx = self._n, self._ctx
        for L in reversed(self.order):
            edges = self.edges.get(L.name)
            if edges is None:
                continue
            t0 = time.perf_counter() if self.timings is not None else 0.0
            dxs = [self._grad_target(e, n) for e in edges]
            accs = [e is not None and e.accumulate and e.stage is None for e in edges]
            if L.is_cost:
                labels, probs = self._input(L, 0, n), self._input(L, 1, n)
                L.bwd_fused(probs, labels, dxs[1], accs[1], n)
            else:
                xs = [self._input(L, i, n) for i in range(len(L.inputs))]
                L.backward(self.dy[L.name].view(n), xs, self.y[L.name].view(n), dxs, accs, n,
                           ctx)
            for e in edges:
                if e is not None and e.stage is not None:
                    dst = self.dy[e.target.name].view(n)
                    if e.accumulate:
                        e.gsum.view(n).copy_(e.stage.view(n))
                        ops.add_(dst, e.gsum.view(n))
                    else:
                        dst.copy_(e.stage.view(n))
            if self.timings is not None:
                self._time(L.name, "bwd", t0)

    def _time(self, name, phase, t0):
        # Host-side wall time: exact for the synchronous CPU backend only.
        key = (name, phase)
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def _grad_target(self, e, n):
        if e is None:
            return None
        if e.stage is not None:
            return e.stage.view(n)
        return self.dy[e.target.name].view(n)

    def update(self, epoch, progress):
        """One SGD step on every parameter (the paper's rule, fused in one kernel):
        v = mom*v - wc*eps*w - eps*grad;  w += v."""
        for p in self.trained:
            t0 = time.perf_counter() if self.timings is not None else 0.0
            ops.sgd_update(p.value, p.inc, p.grad, p.eps.value(epoch, progress), p.momentum,
                           p.decay)
            if self.timings is not None:
                self._time(p.layer.name, "update", t0)

    def train_step(self, images, labels, *, step, epoch, progress):
        stats = self.forward(images, labels, train=True, step=step)
        self.backward()
        self.update(epoch, progress)
        return stats

    def output(self, name, n=None):
        """A layer's output for the last batch, as a host array (..., n)."""
        if name not in self.y:
            raise KeyError(f"no layer with an output named {name!r}")
        return self.y[name].view(n or self._n).numpy()

    # -- state ------------------------------------------------------------------------------
    def state_arrays(self):
        out = {}
        for p in self.params:
            out[p.full_name] = p.value.numpy()
            out[p.full_name + ".inc"] = p.inc.numpy()
        return out

    def load_state_arrays(self, arrays, source="checkpoint"):
        for p in self.params:
            for key, t in ((p.full_name, p.value), (p.full_name + ".inc", p.inc)):
                if key not in arrays:
                    raise ConfigError(f"{source} has no array {key!r} (was the layer added "
                                      "after it was saved?)")
                a = arrays[key]
                if a.shape != t.shape:
                    raise ConfigError(f"{source}: {key} has shape {a.shape}, the net needs "
                                      f"{t.shape}")
                t.copy_(from_numpy(np.ascontiguousarray(a, dtype=np.float32)))

    def schedules(self):
        """{'layer.epsW': Schedule} for every learning rate."""
        return {f"{p.layer.name}.{p.eps_key}": p.eps for p in self.params}

    # -- description -------------------------------------------------------------------------
    def table(self):
        """The layer table printed at start: name, type, inputs, output shape, parameters,
        forward MFLOPs per image."""
        multi = len(self.devices) > 1
        rows = [("layer", "type", "inputs") + (("device",) if multi else ())
                + ("output", "params", "MFLOP", "")]
        tot_p = tot_f = 0
        for L in self.order:
            nparams = sum(math.prod(p.shape) for p in L.params)
            fl = L.flops() if not L.is_data else 0
            tot_p += nparams
            tot_f += fl
            shape = "x".join(map(str, L.out_shape)) if L.out_shape else ("-" if L.is_cost else "1")
            neuron = f" +{L.neuron[0]}" if L.neuron else ""
            rows.append((L.name, L.TYPE, ",".join(L.input_names) or "-")
                        + ((str(L.device),) if multi else ())
                        + (shape, f"{nparams:,}" if nparams else "", f"{fl / 1e6:.1f}" if fl else "",
                           (L.describe() + neuron).strip()))
        rows.append(("total", "", "") + (("",) if multi else ())
                    + ("", f"{tot_p:,}", f"{tot_f / 1e6:.1f}", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for k, r in enumerate(rows):
            cells = [c.rjust(w) if i in (len(r) - 3, len(r) - 2) else c.ljust(w)
                     for i, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells).rstrip())
            if k == 0 or k == len(rows) - 2:
                lines.append("-" * len(lines[0]))
        return "\n".join(lines)
