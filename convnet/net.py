"""The layer graph: a DAG built from a config, with shapes inferred and checked, every buffer
allocated once, and forward / backward / update over the kernels.

Devices. Each layer runs on one device: config key ``gpu`` (an index; by default the device of
the layer's first input, 0 for data layers, as in cuda-convnet2) mapped onto the run's device
(``--device emu`` with gpu=1 -> emu:1, ``--device cpu`` with gpu=1 -> cpu:1, a second logical
CPU device; ``single_device=True`` puts every layer on the run's device). On CUDA and emulated
devices, when the config has more towers gpu=0..G-1 than the machine has devices, tower g runs
on device (run index + g) mod count, as a logical device of its own there (own compute and copy
streams and memory pool; transfers stay explicit copies): ``placement_notes`` says so.
``towers_on=["cuda:0", "cuda:0"]`` places tower g on the g-th device named, the same way.

The schedule. At build time the net compiles, per phase (forward, backward, update), the ordered
tasks of every device: its kernels on its compute stream, and every cross-device edge as an
explicit transfer on the producer's copy stream: activations forward into a buffer on the
consumer's device, gradients back into a landing buffer on the producer's device, where a task
of the producer's compute stream writes or adds them into the producer's gradient. The host
issues every device's tasks without waiting on any; the order between streams comes only from
events (convnet/streams.py), recorded after a producer and waited on before a consumer:
  fwd(P) -> record y(P)      copy(P -> d): wait y(P), wait used(P, d); record sent(P, d)
  fwd(C on d): wait sent(P, d); record used(P, d)   (also after bwd(C), which reads it too)
  fwd(P) of the next step waits sent(P, d): its output is not overwritten while being copied.
  bwd(C): wait gsent(C, i) (stage free again); record g(C, i)
  copy(stage -> landing): wait g(C, i), wait landed(C, i); record gsent(C, i)
  land(P on t): wait gsent(C, i); dy(P) = or += landing; record landed(C, i)
Where a conv or fc layer C reads inputs from several devices, its passes run in two tasks each:
  fwd(C) terms of its own device's inputs; then wait sent(P, d), the other terms, bias, neuron
  bwd(C) input gradients for other devices (record g(C, i)); then weight and local gradients
and a land(P on t) is issued just before bwd(P), after the rest of t's work (see Gradient sums).
A CPU device whose compute stream is blocked for the whole of another device's task (known from
the schedule: _find_helpers) lends that task its cores: fc8, the softmax and the cost of the
two towers run on both cores while the other tower waits for fc8's gradient.
On CPU devices the layers read the batch where the caller put it (host memory is theirs: no
copy, no task), and a step ends with the host waiting for every stream. On CUDA and emulated
devices every device that reads the batch uploads it, and nothing in a step makes the host
wait (see _start_forward):
  host: wait uploaded(d, k % 2) (the upload of step k-2 from that pinned buffer); fill it
  copy(d): wait batchfree(d, k % 2); pinned -> batch buffer k % 2; record uploaded(d, k % 2)
  compute(d): wait uploaded(d, k % 2) before the batch's readers; after the step's last task
              record batchfree(d, k % 2)
and the cost layers write their batch sums into a ring of records on their device
(ops.logreg_record), read only when the caller looks at a step's statistics (StepStats).

Replicas (data parallelism, cuda-convnet2's gpu=0,1,...). A layer listing R devices has R
replicas; each batch is cut into S slices (S: the most replicas of any layer, a multiple of every
layer's R) and the net is built of S instances of every layer, instance s on slice s, on device
gpu[s * R // S] (see _replicate). Instances are ordinary layers of the schedule: activations and
gradients cross devices at the edges as above. Instance 0 owns the weights; the instances on
another device read one copy there. After the backward pass of a layer's last instance its
weight gradients are summed in a fixed order: on each device its instances' in slice order,
then each other device's sum copied to the owner (copy stream) and added there in device order:
  sum on d: record wsum(d)   copy(d -> owner): wait wsum(d); record wsent(d)
  reduce on owner: wait wsent(d) for every d, add them in order
The owner updates; its copy stream sends the new weights to the other devices (wait wupd). The
cost's gradient is the mean over the whole batch, so the sum is the one-device gradient.

Gradient sums. A layer read by several consumers receives one gradient per consumer. The first
consumer (in backward order) on the producer's device (else the first) writes the producer's
gradient buffer, the others add to it (``accumulate=True`` in the backward ops, or ``add_`` of a
landing buffer), so no buffer is ever zeroed. The gradients landing from other devices are
written or added just before the producer's backward pass, after its own device's other work.
"""
import math
import time
from collections.abc import Mapping

import numpy as np

from . import memory, ops
from .config import INT_MAX, ConfigError, LayerSpec
from .device import Device, DeviceError, backend
from .layers import BatchBuffer, make_layer
from .streams import Event, cpu_core_split, make_stream
from .tensor import Tensor, empty, from_numpy

__all__ = ["Net", "Context", "StepStats"]

# Cost records kept on a device per cost layer: the statistics of this many steps can wait
# unread; reusing the slot of a step not read yet reads every pending one first (a host wait).
STATS_RING = 64
# The label's end of the first part of a split backward pass (the gradients other devices wait for).
SENT_FIRST = ": gradients to other devices"


class Context:
    """What a forward/backward pass needs besides tensors: training or testing, the global step
    (dropout masks are a function of it), the run's seed, and the number of batch slices run by
    processes before this one (MPI: each rank's slices draw their own masks)."""

    def __init__(self, train, step, seed, slice_base=0):
        self.train, self.step, self.seed = train, step, seed
        self.slice_base = slice_base


class _Edge:
    """Where the gradient for input i of a layer goes: the producer `target`, written directly
    (same device) or through `stage` (a buffer on the consumer's device) copied into `landing`
    (on the target's device) and from there written or added into the target's gradient;
    `accumulate` says whether the target already holds another gradient."""

    def __init__(self, target, accumulate):
        self.target, self.accumulate = target, accumulate
        self.stage = self.landing = None


class StepStats(Mapping):
    """{cost layer name: {"logprob", "top1", "top5"}} of one batch, summed over its slices: what
    ``Net.train_step`` returns. On CUDA and emulated devices the sums stay in the device's record
    ring until first looked at; that read copies every step not read yet in one transfer per
    cost layer (the host waits for the device then, and only then)."""

    def __init__(self, net, seq, n):
        self._net, self.seq, self.n = net, seq, n
        self._values = None

    def _resolve(self):
        if self._values is None:
            self._net._read_stats()
        return self._values

    def __getitem__(self, name):
        return self._resolve()[name]

    def __iter__(self):
        return iter([C.name for C in self._net.costs])

    def __len__(self):
        return len(self._net.costs)

    def __repr__(self):
        return f"StepStats({self._values if self._values is not None else 'not read yet'})"


class _Task:
    """One entry of a device's schedule: `fn(n, ctx)` on the `role` stream of `device`, after
    waiting the events `waits`, recording `records` when done. A transfer also has `xfer`:
    (edge, direction, source buffer, destination buffer). `helpers`: the other devices whose
    compute streams are blocked for the whole of this task (see Net._find_helpers)."""

    __slots__ = ("device", "role", "label", "fn", "waits", "records", "xfer", "helpers")

    def __init__(self, device, role, label, fn, waits=(), records=(), xfer=None):
        self.device, self.role, self.label, self.fn = device, role, label, fn
        self.waits, self.records, self.xfer = list(waits), list(records), xfer
        self.helpers = []


class Net:
    """Build with ``Net(config, image_shape=(3, 224, 224), device="cpu", batch_size=128, seed=0)``.

    ``config`` is a convnet.config.NetConfig. ``image_shape`` is what the data source delivers
    per image. Buffers are allocated for ``batch_size`` images; smaller batches use a prefix."""

    def __init__(self, config, *, image_shape, device="cpu", batch_size=128, seed=0,
                 single_device=False, towers_on=None):
        self.config, self.batch_size, self.seed = config, int(batch_size), int(seed)
        self.image_shape = tuple(image_shape)
        self.run_device = Device(device)
        self.single_device = bool(single_device)
        self.towers_on = self._check_towers_on(towers_on)
        self.layers = [make_layer(spec, self._neurons()) for spec in config.layers]
        self._replicate()
        self.by_name = {L.name: L for L in self.instances}
        self._link()
        self.order = self._toposort()
        self._place()
        self._infer_shapes()
        self._plan_backward()
        memory.check_fits(self)  # before any buffer exists
        self._allocate()
        self.grad_hook = None
        self.slice_base = 0  # slices of the global batch run by lower MPI ranks
        self._compile()
        self._open_streams()
        self.init_params(self.seed)
        self.timings = None  # {(layer, "fwd" | "bwd" | "update"): seconds} when profiling
        self.transfer_log = []  # the transfers of the last step: dicts (see _issue)

    @staticmethod
    def _neurons():
        return set(ops.neuron_kinds())

    # -- building ---------------------------------------------------------------------------
    def _link(self):
        self.consumers = {L.name: [] for L in self.instances}
        for L in self.instances:
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
        self._all_costs = [L for L in self.instances if L.is_cost]
        if not any(not L.is_labels for L in self.data_layers):
            raise ConfigError("the net has no image input (a layer with type=data, dataIdx=0)",
                              self.config.def_path)

    def _toposort(self):
        # Kahn's algorithm, keeping file order among ready layers.
        pending = {L.name: len(set(L.input_names)) for L in self.instances}
        order, ready = [], [L for L in self.instances if pending[L.name] == 0]
        while ready:
            L = ready.pop(0)
            order.append(L)
            for C in dict.fromkeys(self.consumers[L.name]):
                pending[C.name] -= 1
                if pending[C.name] == 0:
                    ready.append(C)
            ready.sort(key=lambda x: x.index)
        if len(order) != len(self.instances):
            stuck = [L.name for L in self.instances if pending[L.name] > 0 and L.slice == 0]
            raise ConfigError(f"the layers {', '.join(stuck)} form a cycle through inputs=",
                              self.config.def_path)
        return order

    def _replicate(self):
        """Data parallelism (cuda-convnet2's gpu=0,1,...): a layer listing R devices has R
        replicas. The batch is cut into S slices, S the largest R of the net (every R must
        divide it); the net is built of S instances of every layer, instance s running slice s
        on device gpu[s * R // S] — a layer with fewer replicas runs several slices in turn on one
        device, as cuda-convnet2's passes. Instance 0 keeps the layer's name and owns its
        weights; instance s is 'name@s' and reads the instances s of its inputs. A layer without
        gpu= has the replicas of its first input; a data layer without it is on device 0, or
        with replicas, each slice of it where that slice is first read."""
        by_name = {L.name: L for L in self.layers}
        lists = {}

        def resolve(L, seen):
            if L.name not in lists:
                g = L.cfg["gpu"]
                first = by_name.get(L.input_names[0]) if L.input_names else None
                if g is None and first is not None and first.name not in seen:
                    g = resolve(first, seen | {L.name})
                lists[L.name] = g
            return lists[L.name]

        for L in self.layers:
            resolve(L, frozenset())
        for L in self.layers:
            if lists[L.name] is None and not L.is_data:
                lists[L.name] = (0,)
        widest = max(self.layers, key=lambda L: len(lists[L.name] or ()))
        S = len(lists[widest.name] or (0,))
        for L in self.layers:
            g = lists[L.name]
            if g is not None and S % len(g):
                raise L.spec.error("gpu", f"{len(g)} replicas ({','.join(map(str, g))}) do not "
                                          f"divide the {S} of layer {widest.name!r}: each layer's "
                                          "number of replicas must divide the largest")
        self.slices, self.replicas = S, lists
        self.copies = {L.name: [L] for L in self.layers}
        for L in self.layers:
            for k in range(1, S):
                spec = LayerSpec(f"{L.name}@{k}", L.spec.index, L.spec.file)
                spec.values = dict(L.spec.values)
                if L.input_names:
                    spec.values["inputs"] = (",".join(f"{n}@{k}" for n in L.input_names),
                                             L.spec.values["inputs"][1])
                inst = make_layer(spec, self._neurons())
                inst.slice = k
                self.copies[L.name].append(inst)
        self.instances = [inst for L in self.layers for inst in self.copies[L.name]]
        self.logical_of = {inst.name: L for L in self.layers for inst in self.copies[L.name]}

    def _check_towers_on(self, towers_on):
        """The devices of ``towers_on`` (a list of device strings, or one comma-separated
        string), checked: the run's device type, devices that exist, on the CPU distinct."""
        if towers_on is None:
            return None
        names = towers_on.split(",") if isinstance(towers_on, str) else list(towers_on)
        kind = self.run_device
        out = []
        for name in names:
            d = Device(name)
            if d.type != kind.type:
                raise ValueError(f"towers_on: {d} is not a {kind.type} device (the run is on "
                                 f"{kind}); name devices of one kind, e.g. {kind.type}:0,"
                                 f"{kind.type}:0")
            if d.type != "cpu" and d.index >= self._gpu_count(d):
                raise DeviceError(f"towers_on: {d} does not exist: {self._gpu_count(d)} "
                                  f"{d.type} device(s)")
            backend(d)
            out.append(d)
        if kind.type == "cpu" and len(set(out)) < len(out):
            raise ValueError(f"towers_on: {','.join(map(str, out))} names a CPU device twice; "
                             "towers on CPU devices must be distinct (cpu:N are logical devices "
                             "already: one worker thread each)")
        return out

    @staticmethod
    def _gpu_count(kind):
        """Devices of the machine (not the logical devices added for towers sharing one)."""
        mod = backend(Device(f"{kind.type}:0"))
        return sum(1 for i in range(mod.device_count()[0]) if mod.physical_device(i) == i)

    def _tower_devices(self, gpus):
        """{gpu index: Device, or the DeviceError of using it} for the gpu indices of the
        config (0 always: the data layers' default)."""
        kind = self.run_device
        if self.single_device:
            return {g: kind for g in gpus}
        if self.towers_on is not None:
            named = self.towers_on
            missing = [g for g in gpus if g >= len(named)]
            out = {g: DeviceError(f"towers_on names {len(named)} device(s) "
                                  f"({','.join(map(str, named))}), none for gpu={g}")
                   for g in missing}
            base = {g: named[g] for g in gpus if g < len(named)}
            if kind.type == "cpu":
                return {**out, **base}
        else:
            plain = {g: Device(f"{kind.type}:{kind.index + g}") for g in gpus}
            if kind.type == "cpu":
                return plain
            count = self._gpu_count(kind)
            if len(gpus) <= count or gpus != list(range(len(gpus))):
                # Enough devices (one past the end, from the run's index, is an error), or not
                # towers 0..G-1 (a stray index is a mistake, not a tower to fold). Indices
                # past the machine's devices are errors even where another net made a logical
                # device of that index: those are reached through the mapping only.
                return {g: d if d.index < count else DeviceError(
                    f"{d} does not exist: {count} {d.type} device(s), {d.type}:0.."
                    f"{d.type}:{count - 1}") for g, d in plain.items()}
            out = {}
            base = {g: Device(f"{kind.type}:{(kind.index + g) % count}") for g in gpus}
            self.placement_notes.append(
                f"{count} {kind.type} device(s) for {len(gpus)} towers: "
                + ", ".join(f"gpu={g} on {base[g]}" for g in gpus)
                + "; towers sharing a device run as logical devices of their own there (own "
                  "compute and copy streams), with transfers between them as explicit copies")
        mod = backend(kind)
        shares = {}
        for g in sorted(base):
            physical = base[g].index
            share = shares.get(physical, 0)
            shares[physical] = share + 1
            out[g] = Device(f"{kind.type}:{mod.logical_device(physical, share)}")
        return out

    def _place(self):
        kind = self.run_device
        backend(kind)  # DeviceError naming the run's device if it does not exist
        self.placement_notes = []
        gpus = sorted({0} | {g for L in self.layers for g in (self.replicas[L.name] or ())})
        towers = self._tower_devices(gpus)

        def device(gpu):
            d = towers[gpu]
            if isinstance(d, Exception):
                raise d
            return d

        for L in self.layers:
            for gpu in self.replicas[L.name] or ():
                try:
                    backend(device(gpu))
                except DeviceError as e:
                    raise L.spec.error("gpu", f"gpu={gpu} with the run on {kind}: {e}") from None
        for L in self.layers:
            g = self.replicas[L.name]
            for inst in self.copies[L.name]:
                if g is not None:
                    inst.device = device(g[inst.slice * len(g) // self.slices])
        for inst in self.instances:
            if inst.device is None:  # a data layer without gpu=: on device 0 (cuda-convnet2);
                readers = self.consumers[inst.name]  # with replicas, where its slice is read
                inst.device = readers[0].device if readers and self.slices > 1 else device(0)
        self.devices = sorted({L.device for L in self.instances}, key=lambda d: d.index)
        # CUDA and emulated devices: a step is issued without the host waiting (see the module
        # docstring); CPU devices run their queues on worker threads and end each step in a wait.
        self._async = any(d.type != "cpu" for d in self.devices)

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
            if L.out_shape and max(L.out_shape) > INT_MAX:
                raise L.shape_error(f"output shape {L.out_shape} has a dimension above "
                                    f"{INT_MAX}, the largest size a kernel takes")
        # The weights of the net: those of instance 0 of each layer (the owners).
        self.params = [p for L in self.order if L.slice == 0 for p in L.params]
        self.total_params = sum(math.prod(p.shape) for p in self.params)
        self.total_flops = sum(L.flops() for L in self.order if not L.is_data and L.slice == 0)

    def _plan_backward(self):
        requires = {}
        for L in self.order:
            requires[L.name] = bool(L.params) or any(requires[P.name] for P in L.inputs)
        on_path = {}
        for L in reversed(self.order):
            on_path[L.name] = L.is_cost or any(on_path[C.name] for C in self.consumers[L.name])
        self.fused = {}  # cost name -> the softmax layer whose gradient it computes
        for cost in self._all_costs:
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
        # Gradient edges, in backward order: (consumer, input index, target) for every
        # gradient a consumer sends back.
        sends = []
        for L in reversed(self.order):
            if not self.active[L.name]:
                continue
            for i, P in enumerate(L.inputs):
                if L.is_cost and i == 1:
                    P = self.fused[L.name].inputs[0]
                elif L.is_cost:
                    continue
                if self.active.get(P.name) and not P.is_data:
                    sends.append((L, i, P))
        # One of them writes the target's gradient, the others add to it: the first consumer
        # on the target's own device, else the first; so the gradients landing from other
        # devices are added last, and their landing waits until the target's own device has
        # run everything else before the target's backward pass.
        writer = {}
        for L, i, P in sends:
            w = writer.get(P.name)
            if w is None or (w[0].device != P.device and L.device == P.device):
                writer[P.name] = (L, i)
        self.edges = {L.name: [None] * len(L.inputs) for L in reversed(self.order)
                      if self.active[L.name]}
        for L, i, P in sends:
            self.edges[L.name][i] = _Edge(P, writer[P.name] != (L, i))
        self.has_dy = set(writer)
        # A pool that is the only consumer of a layer with a fused bias + ReLU (conv, fc), on its
        # device, masks that layer's gradient and writes its bias gradient in its own backward
        # pass, as each channel of the gradient is done (ops.pool_bwd's relu_bias): one pass
        # over the gradient fewer than the layer's relu_bias_bwd, the same bits.
        senders = {}
        for L, i, P in sends:
            senders.setdefault(P.name, []).append((L, i))
        for L in self.order:
            if L.TYPE == "pool":
                L.relu_bias_of = None
                L.backward_runs = self.active[L.name]
            if L.fused_neuron:
                L.relu_bias_done = False
        for L, i, P in sends:
            if (L.TYPE == "pool" and P.fused_neuron and senders[P.name] == [(L, i)]
                    and L.device == P.device):
                L.relu_bias_of, P.relu_bias_done = P, True
        self.trained = [p for p in self.params if self.active[p.layer.name]]
        for L in self.order:
            if self.active[L.name] and not L.is_cost and L.name not in self.has_dy:
                raise AssertionError(f"layer {L.name} is trained but receives no gradient")

    def _allocate(self):
        # Buffers hold one slice: the largest slice of the largest batch.
        N = -(-self.batch_size // self.slices)
        self.y, self.dy, self.remote = {}, {}, {}
        for L in self.order:
            L.build(N, L.device)
            if not L.is_cost and (self._async or not L.is_data):  # CPU: the batch is read in place
                dtype = np.int32 if L.is_data and L.is_labels else np.float32
                self.y[L.name] = BatchBuffer(L.out_shape, N, L.device, dtype)
            if L.name in self.has_dy:
                self.dy[L.name] = BatchBuffer(L.out_shape, N, L.device)
        # Activations read on another device: one copy per (producer, device).
        for L in self.order:
            for P in L.inputs:
                if P.device != L.device and (self._async or not P.is_data):
                    key = (P.name, L.device)
                    if key not in self.remote:
                        dtype = np.int32 if P.is_data and P.is_labels else np.float32
                        self.remote[key] = BatchBuffer(P.out_shape, N, L.device, dtype)
        # Gradients crossing devices: staged on the consumer's device, copied into a landing
        # buffer on the producer's, written or added into the producer's gradient there.
        for L in self.order:
            for e in self.edges.get(L.name, []):
                if e is None or e.target.device == L.device:
                    continue
                e.stage = BatchBuffer(e.target.out_shape, N, L.device)
                e.landing = BatchBuffer(e.target.out_shape, N, e.target.device)
        self._share_weights()
        if self._async:
            self._allocate_async(N)

    def _allocate_async(self, N):
        """CUDA and emulated devices: two batch buffers per data layer and reading device (step
        k uses buffer k % 2, so batch k+1 uploads while step k computes), two pinned host
        buffers per data layer (the host fills one while the other uploads), and per cost
        layer its per-image scratch and its ring of STATS_RING records."""
        self._batch_bufs, self._pinned = {}, {}
        for L in self.order:
            if not L.is_data:
                continue
            dtype = np.int32 if L.is_labels else np.float32
            keys = [("y", L.name, L.device)] + [("remote", L.name, d) for (name, d) in self.remote
                                                if name == L.name]
            for key in keys:
                first = self.y[L.name] if key[0] == "y" else self.remote[(L.name, key[2])]
                self._batch_bufs[key] = [first, BatchBuffer(L.out_shape, N, key[2], dtype)]
            nbytes = math.prod(L.out_shape) * N * np.dtype(dtype).itemsize
            mod = backend(L.device)
            self._pinned[L.name] = [mod.pinned_empty(nbytes).view(dtype) for _ in range(2)]
        self._cost_bufs = {C.name: (empty((N,), np.float32, C.device),
                                    empty((N,), np.int32, C.device),
                                    empty((STATS_RING, ops.COST_RECORD_INTS), np.int32, C.device))
                           for C in self._all_costs}
        self._issued = 0  # batches issued: step k uses batch and pinned buffers k % 2
        self._unread = {}  # record number -> StepStats not read yet

    def _share_weights(self):
        """The instances of a layer on one device read one copy of its weights (that of the
        first of them; the owner's on the owner's device); each instance has its own gradient.
        ``copies[p]``: every instance's Param of owner Param p, in slice order; ``landing``: a
        buffer on the owner's device per other device, receiving that device's gradient sum."""
        self.param_copies, self.grad_landing = {}, {}
        for L in self.layers:
            for k, p in enumerate(L.params):
                ps = [inst.params[k] for inst in self.copies[L.name]]
                first = {}
                for q in ps:
                    q.value = first.setdefault(q.layer.device, q).value
                self.param_copies[p] = ps
                for d in first:
                    if d != L.device:
                        self.grad_landing[(p, d)] = empty(p.shape, device=L.device)

    def broadcast_weights(self):
        """Copies every owner's weights to the other devices holding replicas (after an
        initialisation or a load; training keeps them equal itself)."""
        self._drain_async()
        for p, ps in self.param_copies.items():
            for q in ps:
                if q.value is not p.value and q.layer.device != p.layer.device:
                    q.value.copy_(p.value)

    # -- the schedule -----------------------------------------------------------------------
    def _event(self, *key):
        ev = self.events.get(key)
        if ev is None:
            # Created on the device whose stream records it (CUDA wants them on one device).
            ev = self.events[key] = Event(self._event_device(key), "/".join(map(str, key)))
        return ev

    def _event_device(self, key):
        kind, name = key[0], key[1]
        if kind in ("y", "sent", "g", "gsent"):
            return self.by_name[name].device
        if kind == "used":
            return key[2]
        if kind in ("wsum", "wsent"):  # a device's gradient sum of a layer's weights
            return key[3]
        if kind == "wupd":  # the owner's updated weights
            return self.by_name[name].device
        if kind in ("uploaded", "batchfree"):  # (kind, device, buffer): the batch upload's
            return key[1]
        return self.edges[name][key[2]].target.device  # landed: on the gradient's target

    def _compile(self):
        """The tasks of each phase in issue order (see the module docstring for the events).
        A layer whose backward pass would be split for other devices that are idle anyway
        while its input gradients for them are computed (fc8 of the two towers: the other
        tower has nothing left but to wait for it) runs it whole, helped by their cores."""
        whole = set()
        while True:
            self._compile_tasks(whole)
            more = {t.label[len("bwd "):-len(SENT_FIRST)] for t in self.tasks["backward"]
                    if t.helpers and t.label.endswith(SENT_FIRST)}
            if more <= whole:
                return
            whole |= more

    def _compile_tasks(self, whole):
        self.events = {}
        ev = self._event
        remote_devs = {L.name: sorted({C.device for C in self.consumers[L.name]
                                       if C.device != L.device}, key=lambda d: d.index)
                       for L in self.order}
        fwd = []
        for L in self.order:
            d = L.device
            if L.is_data:
                # The batch comes from the host: on CPU devices the layers read it there; else
                # every device that reads it uploads it itself, in its own stream order (no
                # event, no hop through the data layer's device).
                for e in [d] + remote_devs[L.name] if self._async else []:
                    label = f"upload {L.name}" if e == d else f"upload {L.name} -> {e}"
                    fwd.append(_Task(e, "compute", label, self._upload_fn(L, e)))
                continue
            far = [P for P in dict.fromkeys(L.inputs) if P.device != d and not P.is_data]
            arrive = [ev("sent", P.name, d) for P in far]
            free = [ev("sent", L.name, e) for e in remote_devs[L.name]]  # y copied out
            records = [ev("used", P.name, d) for P in far]
            if remote_devs[L.name]:
                records.append(ev("y", L.name))
            here = [i for i, P in enumerate(L.inputs) if P not in far]
            if far and here and L.SPLITS_PASSES:
                # The terms of the inputs on this device first, while the others are copied.
                order = tuple(here + [i for i in range(len(L.inputs)) if i not in here])
                fwd.append(_Task(d, "compute", f"fwd {L.name}: inputs on {d}",
                                 self._fwd_fn(L, (order, 0, len(here))), free))
                fwd.append(_Task(d, "compute", f"fwd {L.name}",
                                 self._fwd_fn(L, (order, len(here), len(order))), arrive,
                                 records))
            else:
                fwd.append(_Task(d, "compute", f"fwd {L.name}", self._fwd_fn(L), arrive + free,
                                 records))
            for e in remote_devs[L.name]:
                src, dst = self.y[L.name], self.remote[(L.name, e)]
                fwd.append(_Task(d, "copy", f"{L.name} -> {e}", None,
                                 [ev("y", L.name), ev("used", L.name, e)],
                                 [ev("sent", L.name, e)], (L.name, "fwd", src, dst, L.slice)))
        bwd = []
        self.grad_order = []  # the trained Params in the order the hook sees them
        # The weight gradients of a layer are summed once its last instance is done.
        pending = {L.name: len(self.copies[L.name]) for L in self.layers}
        lands = {}  # target -> its land tasks, issued just before the target's backward pass
        for L in reversed(self.order):
            edges = self.edges.get(L.name)
            if edges is None:
                continue
            bwd += lands.pop(L.name, [])
            d = L.device
            far = [P for P in dict.fromkeys(L.inputs) if P.device != d and not P.is_data]
            cross = [(i, e) for i, e in enumerate(edges) if e is not None and e.stage is not None]
            waits = [ev("gsent", L.name, i) for i, _ in cross]
            sent = [ev("g", L.name, i) for i, _ in cross]
            used = [ev("used", P.name, d) for P in far]
            if cross and L.SPLITS_PASSES and L.name not in whole:
                # The gradients other devices wait for first, so that their copies overlap
                # the rest of this layer's backward pass (the weight gradients, the local
                # inputs' gradients): the same arithmetic, in another order.
                bwd.append(_Task(d, "compute", f"bwd {L.name}{SENT_FIRST}",
                                 self._bwd_fn(L, "inputs"), waits, sent))
                bwd.append(_Task(d, "compute", f"bwd {L.name}", self._bwd_fn(L, "rest"),
                                 records=used))
            else:
                bwd.append(_Task(d, "compute", f"bwd {L.name}", self._bwd_fn(L), waits,
                                 sent + used))
            for i, e in cross:
                t = e.target.device
                bwd.append(_Task(d, "copy", f"d{e.target.name} <- {L.name}", None,
                                 [ev("g", L.name, i), ev("landed", L.name, i)],
                                 [ev("gsent", L.name, i)],
                                 (f"{e.target.name}<-{L.name}", "bwd", e.stage, e.landing,
                                  L.slice)))
                lands.setdefault(e.target.name, []).append(
                    _Task(t, "compute", f"land d{e.target.name} <- {L.name}",
                          self._land_fn(e, L.slice), [ev("gsent", L.name, i)],
                          [ev("landed", L.name, i)]))
            owner = self.logical_of[L.name]
            pending[owner.name] -= 1
            if pending[owner.name] == 0:
                bwd += self._reduce_tasks(owner)
        if lands:
            raise AssertionError(f"gradients land on {', '.join(lands)}, which have no "
                                 "backward pass")
        upd = []
        for p in self.trained:
            far = self._weight_devices(p)[1:]
            k = p.layer.params.index(p)
            done = [ev("wupd", p.layer.name, k)] if far else []
            upd.append(_Task(p.layer.device, "compute", f"update {p.full_name}",
                             self._update_fn(p), records=done))
            for d, qs in far:  # the new weights to every other device with a replica
                upd.append(_Task(p.layer.device, "copy", f"{p.full_name} -> {d}", None, done, [],
                                 (p.full_name, "weights", p.value, qs[0].value, None)))
        self.tasks = {"forward": fwd, "backward": bwd, "update": upd}
        self._find_helpers(fwd + bwd + upd)

    @staticmethod
    def _find_helpers(tasks):
        """Marks each compute task with the other devices that cannot run anything while it
        runs, from the schedule alone (so the same tasks every step, whatever the timing): a
        device e helps task T of device d when T starts only after e's compute stream has done
        its first k items (T's waits say so, through any chain of events) and e's item k+1
        cannot start before T is done (or e has no item k+1 in the step). Vector clocks over
        the streams, in issue order: clock[s][r] = the items of stream r known done before
        stream s's next item starts; an event carries the clock of its latest record."""
        clock, count, items, fired = {}, {}, {}, {}
        for t in tasks:
            s = (t.device, t.role)
            c = clock.setdefault(s, {})
            for e in t.waits:
                for r, k in fired.get(id(e), {}).items():
                    c[r] = max(c.get(r, 0), k)
            count[s] = count.get(s, 0) + 1
            items.setdefault(s, []).append((t, dict(c), count[s]))
            c[s] = count[s]
            for e in t.records:
                fired[id(e)] = dict(c)
        compute = {s[0]: s for s in items if s[1] == "compute"}
        for s, rows in items.items():
            if s[1] != "compute":
                continue
            for t, start, k in rows:
                t.helpers = []
                for e, other in compute.items():
                    if e == t.device or e.type != "cpu":
                        continue
                    done = start.get(other, 0)
                    after = items[other][done:]
                    if not after or after[0][1].get(s, 0) >= k:
                        t.helpers.append(e)

    def _weight_devices(self, p):
        """[(device, the Params of p's instances there, in slice order)]: the owner's device
        first, then the others in the order of their first slice."""
        groups = {}
        for q in self.param_copies[p]:
            groups.setdefault(q.layer.device, []).append(q)
        return list(groups.items())

    def _reduce_tasks(self, L):
        """The sum of the weight gradients of L's instances into the owner's gradient, in a fixed
        order (so the same bits every run): on each device the instances there, in slice order;
        then, on the owner's device, the sums of the other devices in the order of their first
        slice, each copied over on its device's copy stream. Then the gradient hook (MPI)."""
        ev, tasks = self._event, []
        if not self.active[L.name]:
            return tasks
        for k, p in enumerate(L.params):
            groups = self._weight_devices(p)
            owner = L.device
            for d, qs in groups:
                far = d != owner
                if len(qs) > 1 or far:
                    tasks.append(_Task(d, "compute", f"sum d{p.full_name} on {d}",
                                       self._sum_fn(qs),
                                       records=[ev("wsum", L.name, k, d)] if far else []))
                if far:
                    tasks.append(_Task(d, "copy", f"d{p.full_name} {d} -> {owner}", None,
                                       [ev("wsum", L.name, k, d)], [ev("wsent", L.name, k, d)],
                                       (p.full_name, "grad", qs[0].grad,
                                        self.grad_landing[(p, d)], None)))
            far = [d for d, _ in groups[1:]]
            if far:
                tasks.append(_Task(owner, "compute", f"reduce d{p.full_name}",
                                   self._add_landed_fn(p, far),
                                   [ev("wsent", L.name, k, d) for d in far]))
            if self.grad_hook is not None:
                self.grad_order.append(p)
                tasks.append(_Task(owner, "compute", f"gradient ready {p.full_name}",
                                   lambda n, ctx, p=p: self.grad_hook.ready(p)))
        return tasks

    def schedule(self):
        """{device: [task label, ...]} per phase, in issue order: what each device runs."""
        out = {}
        for phase, tasks in self.tasks.items():
            for t in tasks:
                out.setdefault(str(t.device), {}).setdefault(phase, []).append(
                    f"[{t.role}] {t.label}")
        return out

    def _open_streams(self):
        cpu = [d for d in self.devices if d.type == "cpu"]
        concurrent = len(self.devices) > 1
        cores = dict(zip(cpu, cpu_core_split(len(cpu)))) if concurrent and cpu else {}
        self.streams = {}
        for d in self.devices:
            for role in ("compute", "copy"):
                self.streams[(d, role)] = make_stream(d, role, concurrent=concurrent,
                                                      cores=cores.get(d))
        self.peer_access = {}  # (device, device): peer access on (CUDA)
        if self.run_device.type == "cuda" and len(self.devices) > 1:
            mod = backend(self.run_device)
            for a in self.devices:
                for b in self.devices:
                    if a.index < b.index:
                        self.peer_access[(a, b)] = mod.enable_peer_access(a.index, b.index)
        self.cores = {str(d): sorted(c) for d, c in cores.items()}

    def close(self):
        """Stops the worker threads of a multi-device CPU net (also done when it is collected)."""
        for s in getattr(self, "streams", {}).values():
            s.close()
        self.streams = {}

    def __del__(self):
        self.close()

    def stream_times(self):
        """{(device, role): (busy seconds, waiting seconds)} summed over every step so far
        (CPU worker threads; zero where work is issued asynchronously)."""
        return {(str(d), r): (s.busy_s, s.wait_s) for (d, r), s in self.streams.items()}

    def set_tracing(self, on):
        """Tracing on: every CPU stream keeps (label, start, end, cpu) of each task it runs
        and of each wait that blocked (perf_counter seconds; cpu: the CPU seconds the stream's
        thread spent in the task, its OpenMP team's too on a one-device net, 0 for a wait), read
        with ``trace()``; off: forgotten. Switch it between steps, not while a step runs."""
        for s in self.streams.values():
            s.trace = [] if on else None

    def trace(self):
        """{(device, role): [(label, start, end, cpu), ...]} since tracing was turned on (CPU
        streams; the labels are those of ``schedule()``, a blocked wait is "wait EVENT")."""
        return {(str(d), r): list(s.trace) for (d, r), s in self.streams.items()
                if s.trace is not None}

    def _issue(self, phase, n, ctx):
        for t in self.tasks[phase]:
            stream = self.streams[(t.device, t.role)]
            for e in t.waits:
                stream.wait(e)
            if t.xfer is None:
                stream.submit(lambda t=t: t.fn(n, ctx), t.label, self._lent_cores(t))
            else:
                edge, direction, src, dst, part = t.xfer
                if part is not None:  # a slice of activations or gradients
                    m = self._count(part, n)
                    src, dst = (src.view(m), dst.view(m)) if m else (None, None)
                if src is not None:
                    stream.copy(dst, src, t.label)
                    self.transfer_log.append({
                        "step": ctx.step, "edge": edge, "direction": direction,
                        "bytes": src.nbytes, "from": str(src.device), "to": str(dst.device)})
            for e in t.records:
                stream.record(e)

    def _lent_cores(self, t):
        """The cores task t runs on when the devices helping it lend theirs (CPU devices with
        cores of their own), else None: its device's own."""
        if not t.helpers or t.device.type != "cpu" or not self.cores:
            return None
        own = set(self.cores[str(t.device)])
        cores = own.union(*(self.cores[str(e)] for e in t.helpers))
        return cores if cores != own else None

    def drain(self):
        """Waits until every stream has run what was issued; raises the first error."""
        self._synchronize()

    def _synchronize(self):
        error = None
        for s in self.streams.values():
            try:
                s.synchronize()
            except BaseException as e:  # every stream drained first, then the first error
                error = error or e
        if error is not None:
            raise error

    def _count(self, part, n):
        """Images in slice `part` of a batch of n: slice k is images [k*n//S, (k+1)*n//S)."""
        return (part + 1) * n // self.slices - part * n // self.slices

    def _upload_fn(self, L, device):
        """The upload of data layer L's slice to `device` from the pinned buffer filled by
        _start_forward, on the device's copy stream; its compute stream waits for it."""
        key = ("y", L.name, device) if device == L.device else ("remote", L.name, device)

        def run(n, ctx):
            m = self._count(L.slice, n)
            if not m:
                return
            copy, compute = self.streams[(device, "copy")], self.streams[(device, "compute")]
            k = self._issued % 2
            dst = self._batch_bufs[key][k].view(m)
            host = self._pinned[L.name][k][:dst.size].reshape(dst.shape)
            uploaded = self._event("uploaded", device, k)
            copy.wait(self._event("batchfree", device, k))  # step k-2 has done reading it
            copy.upload(dst, host)
            copy.record(uploaded)
            compute.wait(uploaded)
        return run

    def _fwd_fn(self, L, terms=None):
        """Layer L's forward pass, or the terms `terms` of its sum (Layer.forward)."""
        def run(n, ctx):
            n = self._count(L.slice, n)
            if not n:
                return
            t0 = time.perf_counter() if self.timings is not None else 0.0
            if L.is_cost and self._async:
                nll, rank, records = self._cost_bufs[L.name]
                L.fwd_record([self._input(L, i, n) for i in range(len(L.inputs))],
                             nll.narrow(0, n), rank.narrow(0, n), records,
                             self._seq % STATS_RING)
            elif L.is_cost:
                L.forward([self._input(L, i, n) for i in range(len(L.inputs))], None, n, ctx)
            else:
                L.forward([self._input(L, i, n) for i in range(len(L.inputs))],
                          self.y[L.name].view(n), n, ctx, terms)
            if self.timings is not None:
                self._time(L.name, "fwd", t0)
        return run

    def _bwd_fn(self, L, part=None):
        """Layer L's backward pass, or one part of it (Layer.backward): part "inputs" computes
        the input gradients staged for other devices (all of them where the layer computes
        them in one call: input_grads_together), part "rest" everything else."""
        def in_part(e):
            if part is None or e is None:
                return True
            if L.input_grads_together:
                return part == "inputs"
            return (e.stage is None) == (part == "rest")
        edges = [e if in_part(e) else None for e in self.edges[L.name]]

        def run(n, ctx):
            n = self._count(L.slice, n)
            t0 = time.perf_counter() if self.timings is not None else 0.0
            dxs = [self._grad_target(e, n) for e in edges]
            accs = [e is not None and e.accumulate and e.stage is None for e in edges]
            if L.is_cost:
                # The gradient of the mean over the whole batch (over every process's, with MPI).
                labels, probs = self._input(L, 0, n), self._input(L, 1, n)
                L.bwd_fused(probs, labels, dxs[1], accs[1], self._mean_over,
                            labels_checked=self._async)
            else:
                xs = [self._input(L, i, n) for i in range(len(L.inputs))]
                L.backward(self.dy[L.name].view(n), xs, self.y[L.name].view(n), dxs, accs, n,
                           ctx, part)
            if self.timings is not None:
                self._time(L.name, "bwd", t0)
        return run

    def _land_fn(self, e, part):
        def run(n, ctx):
            n = self._count(part, n)
            dst = self.dy[e.target.name].view(n)
            if e.accumulate:
                ops.add_(dst, e.landing.view(n))
            elif dst.device.type == "cpu":
                dst.copy_(e.landing.view(n))
            else:  # on the compute stream, in its order (Tensor.copy_ would wait for it)
                self.streams[(dst.device, "compute")].copy(dst, e.landing.view(n))
        return run

    @staticmethod
    def _sum_fn(qs):
        def run(n, ctx):
            for q in qs[1:]:
                ops.add_(qs[0].grad, q.grad)
        return run

    def _add_landed_fn(self, p, devices):
        def run(n, ctx):
            for d in devices:
                ops.add_(p.grad, self.grad_landing[(p, d)])
        return run

    def _update_fn(self, p):
        def run(n, ctx):
            t0 = time.perf_counter() if self.timings is not None else 0.0
            ops.sgd_update(p.value, p.inc, p.grad, p.eps.value(self._epoch, self._progress),
                           p.momentum, p.decay)
            if self.timings is not None:
                self._time(p.layer.name, "update", t0)
        return run

    def init_params(self, seed):
        self._drain_async()
        for L in self.layers:
            L.init_params(seed)
        self.broadcast_weights()

    # -- running ----------------------------------------------------------------------------
    def _input(self, L, i, n):
        P = L.inputs[i]
        if P.is_data and not self._async:  # the caller's batch (CPU devices: host memory)
            part = self._parts[P.slice][P.is_labels]
            return Tensor(part.shape, part.dtype, L.device, array=part)
        if P.device == L.device:
            return self.y[P.name].view(n)
        return self.remote[(P.name, L.device)].view(n)

    def _start_forward(self, images, labels, train, step):
        n = images.shape[-1]
        if n > self.batch_size:
            raise ValueError(f"batch of {n} images, but the net was built for at most "
                             f"{self.batch_size}")
        cuts = [k * n // self.slices for k in range(self.slices + 1)]
        if self._async:
            self._stage_batch(images, labels, cuts)
        else:  # read in place by the layers: held until the next batch
            self._check_batch(images, labels)
            self._parts = [(np.ascontiguousarray(images[..., a:b]),
                            np.ascontiguousarray(labels[a:b])) for a, b in zip(cuts, cuts[1:])]
        ctx = Context(train, step, self.seed, self.slice_base)
        self._n, self._ctx, self._mean_over = n, ctx, n
        self.transfer_log = []
        self._issue("forward", n, ctx)

    def _check_batch(self, images, labels):
        """CPU devices read the caller's arrays as they are: float32 images (*image_shape, n)
        and int32 labels (n,), or a clear error."""
        n = images.shape[-1]
        for what, a, dtype, shape in (("images", images, np.float32, self.image_shape + (n,)),
                                      ("labels", labels, np.int32, (n,))):
            if a.dtype != dtype or a.shape != shape:
                raise ValueError(f"{what} {a.dtype} {a.shape}: the net takes {np.dtype(dtype)} "
                                 f"{shape}")

    def _stage_batch(self, images, labels, cuts):
        """CUDA and emulated devices: checks the labels on the host (the device kernels then
        need not read a flag back), takes the next record of the cost ring (reading the pending
        ones first if it would overwrite one), waits for the uploads of two steps back from
        pinned buffer k % 2 (the only host wait of a step) and fills it; the layers read batch
        buffer k % 2."""
        if self.costs:
            ops.check_labels(labels, min(C.classes for C in self.costs))
        self._issued += 1
        k = self._issued % 2
        self._seq = self._issued
        if self._seq - STATS_RING in self._unread:
            self._read_stats()
        for d in self.devices:
            self._event("uploaded", d, k).synchronize()
        for L in self.order:
            if not L.is_data:
                continue
            a, b = cuts[L.slice], cuts[L.slice + 1]
            if b > a:
                src = labels[a:b] if L.is_labels else images[..., a:b]
                host = self._pinned[L.name][k][:src.size].reshape(src.shape)
                np.copyto(host, src, casting="no")
        for (kind, name, d), bufs in self._batch_bufs.items():
            if kind == "y":
                self.y[name] = bufs[k]
            else:
                self.remote[(name, d)] = bufs[k]

    def _end_async_step(self):
        """After the last task of a step: each device's batch buffer of this step is free once
        its compute stream gets here."""
        k = self._issued % 2
        for d in self.devices:
            self.streams[(d, "compute")].record(self._event("batchfree", d, k))

    def _read_stats(self):
        """Reads every cost ring (one copy per cost layer instance, which waits for its device)
        and fills the StepStats not read yet, summing slices as _stats does."""
        host = {name: bufs[2].numpy() for name, bufs in self._cost_bufs.items()}
        for seq in sorted(self._unread):
            handle = self._unread[seq]
            out = {}
            for C in self.costs:
                parts = [ops.cost_records(host[inst.name], [seq % STATS_RING], inst.classes)[0]
                         for inst in self.copies[C.name] if self._count(inst.slice, handle.n)]
                out[C.name] = {k: sum(st[k] for st in parts) for k in parts[0]}
            handle._values = out
            del self._unread[seq]

    def _drain_async(self):
        """Before the host touches device state between steps (loads, broadcasts): every
        stream done."""
        if getattr(self, "_async", False) and getattr(self, "streams", None):
            self._synchronize()

    def forward(self, images, labels, *, train, step=0):
        """Runs the net on a batch: images float32 (C, H, W, n), labels int32 (n,) (numpy).
        Returns {cost layer name: stats} (summed log-probability and errors over the batch)."""
        self._start_forward(images, labels, train, step)
        self._synchronize()
        stats = self._stats()
        return {name: stats[name] for name in stats}

    def _stats(self):
        """{cost layer: stats} summed over the slices of the batch (CUDA and emulated devices:
        a StepStats read from the device when first looked at)."""
        if self._async:
            handle = self._unread[self._seq] = StepStats(self, self._seq, self._n)
            return handle
        out = {}
        for C in self.costs:
            parts = [inst.stats for inst in self.copies[C.name]
                     if self._count(inst.slice, self._n)]
            out[C.name] = {k: sum(st[k] for st in parts) for k in parts[0]}
        return out

    def _check_trainable(self, n):
        if n < self.slices:
            raise ValueError(f"batch of {n} images: the net's replicas cut each batch into "
                             f"{self.slices} slices, so a training batch needs >= "
                             f"{self.slices} images")

    def set_grad_hook(self, hook):
        """`hook.ready(param)` runs on the owner's compute stream as soon as the summed
        gradient of `param` is complete in the backward pass (the order of the backward pass);
        `hook.finish()` runs between the backward and the update phases. MPI uses it
        (convnet/distributed.py) to start each bucket's allreduce while backward goes on."""
        self.grad_hook = hook
        self._compile()

    def backward(self):
        """Gradients of the mean cost over the last forward batch, into every Param.grad."""
        self._check_trainable(self._n)
        self._issue("backward", self._n, self._ctx)
        self._synchronize()

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
        self._epoch, self._progress = epoch, progress
        self._issue("update", self._n, self._ctx)
        self._synchronize()

    def train_step(self, images, labels, *, step, epoch, progress, mean_over=None):
        """Forward, backward and update issued on every device's streams at once. CPU devices:
        the host waits once, at the end of the step. CUDA and emulated devices: it returns
        without waiting (the only wait is for the pinned buffer of two steps back, in
        _stage_batch), and the StepStats returned are read from the device when looked at.
        `mean_over`: the number of images the gradient is the mean over (default: this
        batch's; with MPI, the global batch's)."""
        self._epoch, self._progress = epoch, progress
        self._check_trainable(images.shape[-1])
        self._start_forward(images, labels, True, step)
        self._mean_over = mean_over or self._n
        self._issue("backward", self._n, self._ctx)
        if self.grad_hook is not None:
            self.grad_hook.finish()
        self._issue("update", self._n, self._ctx)
        if self._async:
            self._end_async_step()
        else:
            self._synchronize()
        return self._stats()

    def output_names(self):
        """The layers (and replica instances) with an output that ``output`` reads."""
        return [L.name for L in self.order if not L.is_cost]

    def output(self, name, n=None):
        """A layer's output for the last batch, as a host array (..., n)."""
        if name not in self.copies or self.by_name[name].is_cost:
            raise KeyError(f"no layer with an output named {name!r}")
        n = n or self._n
        parts = [self._output_part(inst, self._count(inst.slice, n))
                 for inst in self.copies[name] if self._count(inst.slice, n)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def _output_part(self, L, m):
        if L.is_data and not self._async:  # the caller's batch, read in place
            return self._parts[L.slice][L.is_labels][..., :m]
        return self.y[L.name].view(m).numpy()

    # -- state ------------------------------------------------------------------------------
    def state_arrays(self):
        self._drain_async()
        out = {}
        for p in self.params:
            out[p.full_name] = p.value.numpy()
            out[p.full_name + ".inc"] = p.inc.numpy()
        return out

    def load_state_arrays(self, arrays, source="checkpoint"):
        self._drain_async()
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
        self.broadcast_weights()

    def schedules(self):
        """{'layer.epsW': Schedule} for every learning rate."""
        return {f"{p.layer.name}.{p.eps_key}": p.eps for p in self.params}

    # -- description -------------------------------------------------------------------------
    def transfer_bytes(self):
        """{layer: (forward, backward)} bytes per image copied between devices for the layer's
        output: its activations to every other device that reads them, and the gradients coming
        back from there. With replicas, the mean over the slices (each slice's images cross
        where that slice's instances do)."""
        out = {}
        for t in self.tasks["forward"] + self.tasks["backward"]:
            if t.xfer is None or t.xfer[4] is None:
                continue
            edge, direction, src, dst, _ = t.xfer
            name = self.logical_of[edge.split("<-")[0]].name
            nbytes = src.per_image * src.flat.dtype.itemsize / self.slices
            f, b = out.get(name, (0, 0))
            out[name] = (f + nbytes, b) if direction == "fwd" else (f, b + nbytes)
        return out

    def weight_transfer_bytes(self):
        """Bytes of weight gradients (to the owners) and weights (back to the replicas) copied
        between devices per training step."""
        return sum(t.xfer[2].nbytes for t in self.tasks["backward"] + self.tasks["update"]
                   if t.xfer is not None and t.xfer[4] is None)

    def table(self):
        """The layer table printed at start: name, type, inputs, output shape, parameters,
        forward MFLOPs per image; with several devices also each layer's device and the bytes
        per image its output moves between devices (forward + backward)."""
        multi = len(self.devices) > 1
        xfer = self.transfer_bytes() if multi else {}
        rows = [("layer", "type", "inputs") + (("device",) if multi else ())
                + ("output", "params", "MFLOP") + (("xfer KB/img",) if multi else ()) + ("",)]
        nums = {len(rows[0]) - 2 - multi, len(rows[0]) - 3 - multi, len(rows[0]) - 2}
        tot_p = tot_f = tot_x = 0
        for L in self.order:
            if L.slice:
                continue
            devices = ",".join(dict.fromkeys(str(inst.device) for inst in self.copies[L.name]))
            nparams = sum(math.prod(p.shape) for p in L.params)
            fl = L.flops() if not L.is_data else 0
            tot_p += nparams
            tot_f += fl
            shape = "x".join(map(str, L.out_shape)) if L.out_shape else ("-" if L.is_cost else "1")
            neuron = f" +{L.neuron[0]}" if L.neuron else ""
            f, b = xfer.get(L.name, (0, 0))
            tot_x += f + b
            rows.append((L.name, L.TYPE, ",".join(L.input_names) or "-")
                        + ((devices,) if multi else ())
                        + (shape, f"{nparams:,}" if nparams else "",
                           f"{fl / 1e6:.1f}" if fl else "")
                        + ((f"{f / 1e3:.1f}+{b / 1e3:.1f}" if f + b else "",) if multi else ())
                        + ((L.describe() + neuron).strip(),))
        rows.append(("total", "", "") + (("",) if multi else ())
                    + ("", f"{tot_p:,}", f"{tot_f / 1e6:.1f}")
                    + ((f"{tot_x / 1e3:.1f}",) if multi else ()) + ("",))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for k, r in enumerate(rows):
            cells = [c.rjust(w) if i in nums else c.ljust(w)
                     for i, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells).rstrip())
            if k == 0 or k == len(rows) - 2:
                lines.append("-" * len(lines[0]))
        if self.slices > 1:
            lines.append(f"replicas: each batch cut into {self.slices} slices; weight gradients "
                         f"to the owners and weights back: "
                         f"{self.weight_transfer_bytes() / 1e3:,.1f} KB per step")
        return "\n".join(lines)
