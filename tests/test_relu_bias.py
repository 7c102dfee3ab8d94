"""The fused ReLU + bias backward (ops.relu_bias_bwd, csrc/*/relu_bias*): every backend against
the float64 reference (mask dy by y > 0, sum each filter's row), with and without accumulation,
on rows shorter than, equal to and longer than the CPU's 16 summing lanes, batch 1 and a row of
one; the masked dy has neuron_bwd's bits; the CPU gives the same bits on every SIMD path and
thread count, the emulated GPU in both thread orders; the layer graph uses it for conv and fc
layers with a fused ReLU and computes the gradients the separate passes did. Then the same fused
into the pooling's backward (ops.pool_bwd's relu_bias): the bits of pool_bwd then relu_bias_bwd,
and the net hands it to a pool that is a fused layer's only consumer, with the same gradients."""
import numpy as np
import pytest

import convnet
from convnet import ops
from convnet.config import load_config
from convnet.layers.simple import PoolLayer
from convnet.layers.weights import WeightLayer
from convnet.net import Net

import ref_norm_pool as ref_pool
from gradcheck import assert_close
from isa_paths import PATHS, cpu_isa, isa  # noqa: F401 (isa: a fixture)
from test_conv import _on
from test_net import TINY

# dy shapes (F, ...): one element, odd rows under 16, exactly 16, conv-like (F, H, W, N) rows
# with a 16-lane tail, batch 1, and one large enough for the CPU to split over threads.
SHAPES = [(1, 1), (3, 7), (2, 16), (5, 3, 3, 7), (4, 5, 3, 1), (7, 4, 4, 33), (9, 70, 61)]
IDS = ["x".join(map(str, s)) for s in SHAPES]


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def _problem(rng, shape):
    dy = rng.standard_normal(shape)
    # y after a ReLU: zeros (exact ones, where the mask must drop dy) and positive values.
    y = np.maximum(rng.standard_normal(shape), 0.0)
    return dy, y


def _ref(dy, y, prev=None):
    masked = np.where(y > 0, dy, 0.0)
    db = masked.reshape(dy.shape[0], -1).sum(axis=1)
    return masked, db if prev is None else prev + db


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_relu_bias_bwd(device, rng, shape):
    dy, y = _problem(rng, shape)
    want_dy, want_db = _ref(dy, y)
    tdy, ty, tdb = _on(device, dy), _on(device, y), _on(device, np.full(shape[0], np.nan))
    assert ops.relu_bias_bwd(tdy, ty, tdb) is tdy
    assert_close(tdy.numpy(), want_dy, what="relu_bias_bwd dy")
    assert_close(tdb.numpy(), want_db, what="relu_bias_bwd db")
    # The mask has neuron_bwd's relu bits (+0 where y is 0, whatever dy's sign).
    plain = ops.neuron_bwd(_on(device, dy), None, ty, "relu").numpy()
    assert np.array_equal(_bits(tdy.numpy()), _bits(plain))
    prev = rng.standard_normal(shape[0])
    tdb = _on(device, prev)
    ops.relu_bias_bwd(_on(device, dy), ty, tdb, accumulate=True)
    assert_close(tdb.numpy(), _ref(dy, y, prev)[1], what="relu_bias_bwd accumulate")


def test_relu_bias_bwd_cpu_bits_every_path_and_thread_count(rng):
    """One order of additions per filter, whatever the SIMD path or the number of threads."""
    cpu = convnet.device.module_for("cpu")
    dy, y = _problem(rng, (9, 70, 61))  # 9 x 4270: past the threshold for threads
    threads = cpu.num_threads()
    runs = {}
    try:
        for path in PATHS:
            if PATHS.index(path) > PATHS.index(cpu.isa_supported()):
                continue
            with cpu_isa(path):
                for t in (1, 2, 3):
                    cpu.set_num_threads(t)
                    tdy, tdb = _on("cpu", dy), _on("cpu", np.zeros(9))
                    ops.relu_bias_bwd(tdy, _on("cpu", y), tdb)
                    runs[path, t] = (_bits(tdy.numpy()), _bits(tdb.numpy()))
    finally:
        cpu.set_num_threads(threads)
    first = next(iter(runs.values()))
    for key, (d, b) in runs.items():
        assert np.array_equal(d, first[0]) and np.array_equal(b, first[1]), key


def test_relu_bias_bwd_thread_orders_bit_identical(rng):
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    previous = emu.thread_order()
    dy, y = _problem(rng, (7, 4, 4, 33))
    try:
        runs = []
        for order in ("forward", "reverse"):
            emu.set_thread_order(order)
            tdy, tdb = _on("emu:0", dy), _on("emu:0", np.zeros(7))
            ops.relu_bias_bwd(tdy, _on("emu:0", y), tdb)
            runs.append((_bits(tdy.numpy()), _bits(tdb.numpy())))
        assert all(np.array_equal(a, b) for a, b in zip(*runs))
    finally:
        emu.set_thread_order(previous)


def test_relu_bias_bwd_bad_input(device):
    dy, y, db = (_on(device, np.ones(s)) for s in ((3, 4), (3, 4), (3,)))
    with pytest.raises(ValueError, match="relu_bias_bwd.*y"):
        ops.relu_bias_bwd(dy, _on(device, np.ones((3, 5))), db)
    with pytest.raises(ValueError, match="relu_bias_bwd.*db"):
        ops.relu_bias_bwd(dy, y, _on(device, np.ones(4)))
    with pytest.raises(ValueError, match="relu_bias_bwd.*dy"):
        ops.relu_bias_bwd(_on(device, np.ones(())), y, db)


def _two_part_backward(self, dy, xs, y, dxs, accs, n, ctx, part=None,
                       backward=WeightLayer.backward):
    # The layers' two-part backward (part "inputs", then "rest"), as the two-device executor
    # runs a layer whose inputs are on other devices.
    if part is not None:
        return backward(self, dy, xs, y, dxs, accs, n, ctx, part)
    backward(self, dy, xs, y, dxs, accs, n, ctx, "inputs")
    backward(self, dy, xs, y, dxs, accs, n, ctx, "rest")


def _net_grads(device, images, labels):
    net = Net(load_config(TINY), image_shape=(3, 16, 16), device=device, batch_size=5, seed=3)
    net.forward(images, labels, train=True)
    net.backward()
    return {(L.name, p.name): p.grad.numpy().copy()
            for L in net.layers for p in getattr(L, "params", [])}


@pytest.mark.parametrize("device", ["cpu", "emu:0"])
def test_net_gradients(rng, monkeypatch, device):
    """The tiny net's gradients (conv1 has a fused ReLU) with relu_bias_bwd in one call, in the
    two parts of the two-device executor (the same bits), and with the ReLU and bias as
    separate passes (neuron_bwd, bias_bwd): the same weight gradients (the mask is the same), the
    bias gradients to rounding (summed in another order)."""
    if device == "emu:0" and "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    images = rng.standard_normal((3, 16, 16, 5)).astype(np.float32)
    labels = np.arange(5, dtype=np.int32) % 10
    calls = []
    fused = ops.relu_bias_bwd
    monkeypatch.setattr(ops, "relu_bias_bwd", lambda *a, **k: calls.append(1) or fused(*a, **k))
    one_call = _net_grads(device, images, labels)
    assert calls
    with monkeypatch.context() as m:
        m.setattr(WeightLayer, "backward", _two_part_backward)
        in_parts = _net_grads(device, images, labels)
    calls.clear()
    monkeypatch.setattr(WeightLayer, "FUSES_RELU", False)
    separate = _net_grads(device, images, labels)
    assert not calls
    assert one_call.keys() == in_parts.keys() == separate.keys()
    for key, g in one_call.items():
        assert np.array_equal(_bits(g), _bits(in_parts[key])), f"{device} {key} in parts"
        if key[1] == "b":
            assert_close(g, separate[key], what=f"{device} {key}")
        else:
            assert np.array_equal(_bits(g), _bits(separate[key])), f"{device} {key}"


# Pools (C, H, W, N, size, stride, start): batch 1, non-square, windows overhanging the far edge,
# a negative start, a channel plane that is not a multiple of 16, and one large enough for the
# CPU to split channels over threads; planes that are whole multiples of the bias sum's 16 lanes
# with a negative start and with rows no window reaches (stride > size: zeros, masked and summed).
POOLS = [(3, 7, 9, 1, 3, 2, 0), (2, 8, 5, 3, 2, 2, -1), (5, 6, 6, 5, 4, 1, -1),
         (3, 10, 6, 8, 3, 2, -1), (4, 10, 10, 16, 2, 3, 0), (8, 16, 16, 33, 3, 2, 0)]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("case", POOLS, ids=["x".join(map(str, c)) for c in POOLS])
def test_pool_bwd_relu_bias(device, rng, mode, case):
    c, h, w, n, size, stride, start = case
    # A ReLU's output: a third exact zeros, so windows of zeros route dy to a masked pixel.
    x = np.maximum(rng.standard_normal((c, h, w, n)) - 0.4, 0.0).astype(np.float32)
    tx = _on(device, x)
    y = ops.pool_fwd(tx, mode, size, stride, start)
    dy = rng.standard_normal(y.shape)
    want_dx, want_db = _ref(ref_pool.pool_bwd(dy, x, mode, size, stride, start), x)
    tdb = _on(device, np.full(c, np.nan))
    dx = ops.pool_bwd(_on(device, dy), tx, y, mode, size, stride, start, relu_bias=tdb)
    assert_close(dx.numpy(), want_dx, rtol=1e-6, what=f"{mode} dx")
    assert_close(tdb.numpy(), want_db, what=f"{mode} db")
    # The same bits as the two ops one after the other.
    dx2 = ops.pool_bwd(_on(device, dy), tx, y, mode, size, stride, start)
    db2 = _on(device, np.zeros(c))
    ops.relu_bias_bwd(dx2, tx, db2)
    assert np.array_equal(_bits(dx.numpy()), _bits(dx2.numpy()))
    assert np.array_equal(_bits(tdb.numpy()), _bits(db2.numpy()))


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_bwd_relu_bias_cpu_every_path(isa, rng, mode):
    """The pooling kernels and the row pass are built per SIMD path: each against the reference,
    and with the bits of the two separate ops."""
    case = POOLS[-1]
    c, h, w, n, size, stride, start = case
    x = np.maximum(rng.standard_normal((c, h, w, n)) - 0.4, 0.0).astype(np.float32)
    tx = _on("cpu", x)
    y = ops.pool_fwd(tx, mode, size, stride, start)
    dy = rng.standard_normal(y.shape)
    want_dx, want_db = _ref(ref_pool.pool_bwd(dy, x, mode, size, stride, start), x)
    tdb = _on("cpu", np.zeros(c))
    dx = ops.pool_bwd(_on("cpu", dy), tx, y, mode, size, stride, start, relu_bias=tdb)
    assert_close(dx.numpy(), want_dx, rtol=1e-6, what=f"{isa} {mode} dx")
    assert_close(tdb.numpy(), want_db, what=f"{isa} {mode} db")
    dx2 = ops.pool_bwd(_on("cpu", dy), tx, y, mode, size, stride, start)
    db2 = _on("cpu", np.zeros(c))
    ops.relu_bias_bwd(dx2, tx, db2)
    assert np.array_equal(_bits(dx.numpy()), _bits(dx2.numpy()))
    assert np.array_equal(_bits(tdb.numpy()), _bits(db2.numpy()))


def test_pool_bwd_relu_bias_bad_input(device):
    x = _on(device, np.ones((2, 4, 4, 1)))
    y = ops.pool_fwd(x, "max", 2, 2)
    dy = _on(device, np.ones(y.shape))
    with pytest.raises(ValueError, match="relu_bias.*accumulate"):
        ops.pool_bwd(dy, x, y, "max", 2, 2, out=_on(device, np.ones((2, 4, 4, 1))),
                     accumulate=True, relu_bias=_on(device, np.ones(2)))
    with pytest.raises(ValueError, match="pool_bwd_relu_bias.*db"):
        ops.pool_bwd(dy, x, y, "max", 2, 2, relu_bias=_on(device, np.ones(3)))


# conv1 (ReLU) feeds only a max pool and conv2 (ReLU) only an average pool: both fused into the
# pools; conv3 (ReLU) feeds a pool and an fc layer: not fused (its gradient is a sum).
POOL_NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=3
filters=6
filterSize=3
padding=1
neuron=relu
{learn}
[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
[conv2]
type=conv
inputs=pool1
filters=5
filterSize=3
padding=1
neuron=relu
{learn}
[pool2]
type=pool
pool=avg
inputs=conv2
sizeX=3
stride=2
[conv3]
type=conv
inputs=pool2
filters=4
filterSize=3
padding=1
neuron=relu
{learn}
[pool3]
type=pool
pool=avg
inputs=conv3
sizeX=2
stride=2
[fc4]
type=fc
inputs=pool3,conv3
outputs=10
{learn}
[probs]
type=softmax
inputs=fc4
[logprob]
type=cost.logreg
inputs=labels,probs
""".format(learn="initW=0.1\nepsW=0.01\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.0")


@pytest.mark.parametrize("device", ["cpu", "emu:0"])
def test_net_fuses_relu_bias_into_pools(rng, tmp_path, monkeypatch, device):
    if device == "emu:0" and "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    cfg = tmp_path / "pools.cfg"
    cfg.write_text(POOL_NET)
    images = rng.standard_normal((3, 11, 13, 3)).astype(np.float32)
    labels = np.arange(3, dtype=np.int32) % 10

    def grads():
        net = Net(load_config(str(cfg)), image_shape=(3, 11, 13), device=device, batch_size=3,
                  seed=5)
        net.forward(images, labels, train=True)
        net.backward()
        layers = {L.name: L for L in net.layers}
        out = {(L.name, p.name): p.grad.numpy().copy()
               for L in net.layers for p in getattr(L, "params", [])}
        return layers, out

    layers, fused = grads()
    assert layers["pool1"].relu_bias_of is layers["conv1"] and layers["conv1"].relu_bias_done
    assert layers["pool2"].relu_bias_of is layers["conv2"] and layers["conv2"].relu_bias_done
    assert layers["pool3"].relu_bias_of is None and not layers["conv3"].relu_bias_done
    # The same net with the pools' fusion turned off after planning: relu_bias_bwd in the convs.
    plan = Net._plan_backward

    def plan_unfused(self):
        plan(self)
        for L in self.order:
            if isinstance(L, PoolLayer):
                L.relu_bias_of = None
            if isinstance(L, WeightLayer):
                L.relu_bias_done = False
    monkeypatch.setattr(Net, "_plan_backward", plan_unfused)
    layers, unfused = grads()
    assert not layers["conv1"].relu_bias_done
    assert fused.keys() == unfused.keys() and len(fused) == 9
    for key, g in fused.items():
        assert np.array_equal(_bits(g), _bits(unfused[key])), f"{device} {key}"
