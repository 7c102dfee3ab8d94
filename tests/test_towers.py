"""Two towers: layers with several inputs (cuda-convnet2's multi-input conv and fc) against
float64 references with finite differences; the 2-GPU model in cuda-convnet2's syntax; the
two-tower AlexNet configs against their one-device twins (weights mapped from one to the other:
the same losses, gradients and SGD steps); checkpoints moving between placements; the errors of
misconfigured towers."""
import os

import numpy as np
import pytest

import convnet
from convnet import checkpoint, data, ops
from convnet.config import ConfigError, load_config
from convnet.gradcheck import net_grad_errors
from convnet.layers import make_layer
from convnet.net import Net
from convnet.train import main

import ref_conv as ref
import ref_norm_pool as ref_norm
from gradcheck import assert_close, assert_grad
from isa_paths import isa  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
LAYERS = os.path.join(ROOT, "layers")
ALEXNET = os.path.join(LAYERS, "alexnet.cfg")
ALEXNET_2GPU = os.path.join(LAYERS, "alexnet-2gpu.cfg")
TINY_ALEXNET = os.path.join(LAYERS, "tiny-alexnet.cfg")
TINY_ALEXNET_2GPU = os.path.join(LAYERS, "tiny-alexnet-2gpu.cfg")
CC2_2GPU = (os.path.join(FIX, "imagenet-2gpu-model.cfg"),
            os.path.join(FIX, "imagenet-2gpu-model-params.cfg"))
PAPER_PARAMS = 60_965_224


def has_emu():
    return "emu" in convnet.backends()


needs_emu = pytest.mark.skipif(not has_emu(), reason="convnet was built without the emulated "
                                                     "backend")


# -- one layer with several inputs against the float64 reference ------------------------------

def standalone(text, in_shapes, device, batch):
    """The layer of a one-section config, built for `in_shapes` on `device`."""
    spec = load_config("mix.cfg", def_text=text).layers[0]
    L = make_layer(spec, set(ops.neuron_kinds()))
    L.in_shapes = list(in_shapes)
    L.out_shape = tuple(L.infer(L.in_shapes))
    L.build(batch, device)
    return L


def on(device, a):
    return convnet.tensor(np.asarray(a, np.float32), device)


def set_params(L, rng):
    values = [rng.standard_normal(p.shape) for p in L.params]
    for p, v in zip(L.params, values):
        p.value.copy_(on("cpu", v))
    return values


# Input a: 4x7x9, 3x3 filters, padding 1, stride 1. Input b: 6x15x19 in two groups of 2
# filters, 3x3, no padding, stride 2 (the round-up rule gives 7x9 too). Both make 4 maps of 7x9.
CONV2 = """[mix]
type=conv
inputs=a,b
channels=4,6
filters=4,2
groups=1,2
filterSize=3,3
padding=1,0
stride=1,2
epsW=0.01
epsB=0.01
momW=0.9,0.5
momB=0.9
wc=0.0005,0
"""
CONV2_IN = [(4, 7, 9), (6, 15, 19)]
CONV2_GEO = [dict(padding=1, stride=1, groups=1), dict(padding=0, stride=2, groups=2)]


def conv2_ref(xs, ws, b):
    return sum(ref.conv_fwd(x, w, **g) for x, w, g in zip(xs, ws, CONV2_GEO)) + b[:, None, None,
                                                                                    None]


@pytest.mark.parametrize("n", [1, 3])
def test_multi_input_conv_matches_reference(device, rng, n):
    L = standalone(CONV2, CONV2_IN, device, n)
    assert [p.full_name for p in L.params] == ["mix.w0", "mix.w1", "mix.b"]
    assert L.out_shape == (4, 7, 9) and L.ws[1].shape == (3, 3, 3, 4)
    *ws, b = set_params(L, rng)
    xs = [rng.standard_normal(s + (n,)) for s in CONV2_IN]
    y = convnet.empty((4, 7, 9, n), device=device)
    L.forward([on(device, x) for x in xs], y, n, None)
    assert_close(y.numpy(), conv2_ref(xs, ws, b), what="y")

    dy = rng.standard_normal((4, 7, 9, n))
    prior = rng.standard_normal(xs[1].shape)  # input b's gradient buffer already holds a sum
    dxs = [convnet.empty(xs[0].shape, device=device), on(device, prior)]
    L.backward(on(device, dy), [on(device, x) for x in xs], y, dxs, [False, True], n, None)
    for i, (x, w, g) in enumerate(zip(xs, ws, CONV2_GEO)):
        dx = ref.conv_bwd_data(dy, w, x.shape, **g) + (prior if i else 0)
        assert_close(dxs[i].numpy(), dx, what=f"dx{i}")
        assert_close(L.ws[i].grad.numpy(), ref.conv_bwd_weights(x, dy, 3, **g), what=f"dw{i}")
    assert_close(L.b.grad.numpy(), dy.sum(axis=(1, 2, 3)), what="db")


@needs_emu
def test_multi_input_conv_bits_do_not_depend_on_thread_order(rng):
    xs = [rng.standard_normal(s + (3,)) for s in CONV2_IN]
    dy = rng.standard_normal((4, 7, 9, 3))
    emu = convnet.device.module_for("emu")
    previous, results = emu.thread_order(), []
    try:
        for order in ("forward", "reverse"):
            emu.set_thread_order(order)
            L = standalone(CONV2, CONV2_IN, "emu:0", 3)
            set_params(L, np.random.default_rng(7))
            y = convnet.empty((4, 7, 9, 3), device="emu:0")
            L.forward([on("emu:0", x) for x in xs], y, 3, None)
            dxs = [convnet.empty(x.shape, device="emu:0") for x in xs]
            L.backward(on("emu:0", dy), [on("emu:0", x) for x in xs], y, dxs, [False] * 2, 3,
                       None)
            results.append([t.numpy() for t in [y, *dxs] + [p.grad for p in L.params]])
    finally:
        emu.set_thread_order(previous)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_multi_input_conv_reference_gradients(rng):
    # The float64 reference of the summed layer against central differences, for every input
    # and every weight tensor.
    n = 2
    xs = [rng.standard_normal(s + (n,)) for s in CONV2_IN]
    ws = [rng.standard_normal((4, 3, 3, 4)), rng.standard_normal((3, 3, 3, 4))]
    b = rng.standard_normal(4)
    dy = rng.standard_normal((4, 7, 9, n))
    for i, g in enumerate(CONV2_GEO):
        def f_x(x, i=i):
            return conv2_ref([x if j == i else xs[j] for j in range(2)], ws, b)

        def f_w(w, i=i):
            return conv2_ref(xs, [w if j == i else ws[j] for j in range(2)], b)

        assert_grad(f_x, xs[i], dy, ref.conv_bwd_data(dy, ws[i], xs[i].shape, **g))
        assert_grad(f_w, ws[i], dy, ref.conv_bwd_weights(xs[i], dy, 3, **g))
    assert_grad(lambda bb: conv2_ref(xs, ws, bb), b, dy, dy.sum(axis=(1, 2, 3)))


# Two inputs of one image size and geometry: the backward pass stacks them along their channels
# (ConvLayer._stackable) and makes one input-gradient and one weight-gradient call.
def stack2(c0, c1, f):
    return f"""[mix]
type=conv
inputs=a,b
channels={c0},{c1}
filters={f}
filterSize=3
padding=1
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0
"""


# (channels of a, channels of b, filters, image side): small (direct kernels) and wide enough
# for the Winograd kernels that variant 0 takes from 64 channels and filters up.
STACKED = [(4, 3, 5, 6), (64, 64, 64, 8)]


@pytest.mark.parametrize("c0,c1,f,side", STACKED)
@pytest.mark.parametrize("n", [1, 3])
def test_stacked_conv_inputs_give_each_inputs_own_bits(isa, rng, c0, c1, f, side, n):
    # Each input's gradients from the stacked calls have the bits of that input's own ops call
    # (the same terms reduced in the same order), and match the float64 reference; an input
    # gradient added to a buffer's sum (accumulate) is computed alone; in parts (the
    # two-device executor's "inputs" then "rest") the bits are those of one call.
    in_shapes = [(c0, side, side), (c1, side, side)]
    xs64 = [rng.standard_normal(s + (n,)) for s in in_shapes]
    xs = [on("cpu", x) for x in xs64]
    dy64 = rng.standard_normal((f, side, side, n))
    dy = on("cpu", dy64)
    prior = rng.standard_normal(xs64[1].shape)
    outs = []
    for parts, accs in ((None, [False, False]), ("parts", [False, False]), (None, [False, True])):
        L = standalone(stack2(c0, c1, f), in_shapes, "cpu", n)
        assert L.stacked_shape == (c0 + c1, side, side) and L.input_grads_together
        ws = set_params(L, np.random.default_rng(7))
        y = convnet.empty((f, side, side, n))
        L.forward(xs, y, n, None)
        dxs = [convnet.empty(s + (n,)) for s in in_shapes]
        if accs[1]:
            dxs[1].copy_(on("cpu", prior))
        if parts is None:
            L.backward(dy, xs, y, dxs, accs, n, None)
        else:
            L.backward(dy, xs, y, dxs, accs, n, None, "inputs")
            L.backward(dy, xs, y, [None, None], accs, n, None, "rest")
        got = [t.numpy().copy() for t in dxs + [p.grad for p in L.params]]
        outs.append(got)
        for i, x in enumerate(xs):
            alone_dx = ops.conv_bwd_data(dy, L.ws[i].value, x.shape, padding=1)
            alone_dw = ops.conv_bwd_weights(x, dy, 3, padding=1)
            np.testing.assert_array_equal(got[2 + i], alone_dw.numpy())
            if not accs[i]:
                np.testing.assert_array_equal(got[i], alone_dx.numpy())
            want = ref.conv_bwd_data(dy64, ws[i], x.shape, padding=1) + (prior if accs[i] else 0)
            assert_close(got[i], want, what=f"dx{i}")
            assert_close(got[2 + i], ref.conv_bwd_weights(xs64[i], dy64, 3, padding=1),
                         what=f"dw{i}")
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a, b)


def test_inputs_of_other_geometries_are_not_stacked():
    L = standalone(CONV2, CONV2_IN, "cpu", 2)  # another stride, padding and groups per input
    assert L.stacked_shape is None and not L.input_grads_together
    text = stack2(4, 3, 5).replace("padding=1", "padding=1,0")
    assert standalone(text, [(4, 6, 6), (3, 8, 8)], "cpu", 2).stacked_shape is None
    local = stack2(4, 3, 5).replace("type=conv", "type=local")
    assert standalone(local, [(4, 6, 6), (3, 6, 6)], "cpu", 2).stacked_shape is None


FC3 = """[mix]
type=fc
inputs=a,b,c
outputs=7
initW=0.1,0.2,0.3
epsW=0.01,0.02,0.03
epsB=0.01
momW=0.9
momB=0.9
wc=0
"""
FC3_IN = [(5,), (2, 3, 2), (1,)]  # an FC input, an image input (flattened), one feature


def fc3_ref(xs, ws, b):
    return sum(ref.fc_fwd(x.reshape(w.shape[0], -1), w) for x, w in zip(xs, ws)) + b[:, None]


@pytest.mark.parametrize("n", [1, 3])
def test_multi_input_fc_matches_reference(device, rng, n):
    L = standalone(FC3, FC3_IN, device, n)
    assert [p.name for p in L.params] == ["w0", "w1", "w2", "b"]
    assert [w.shape for w in L.ws] == [(5, 7), (12, 7), (1, 7)]
    assert [p.eps.base for p in L.ws] == [0.01, 0.02, 0.03]
    assert [p.eps_key for p in L.params] == ["epsW.0", "epsW.1", "epsW.2", "epsB"]
    *ws, b = set_params(L, rng)
    xs = [rng.standard_normal(s + (n,)) for s in FC3_IN]
    y = convnet.empty((7, n), device=device)
    L.forward([on(device, x) for x in xs], y, n, None)
    assert_close(y.numpy(), fc3_ref(xs, ws, b), what="y")

    dy = rng.standard_normal((7, n))
    dxs = [convnet.empty(x.shape, device=device) for x in xs]
    dxs[1] = None  # an input whose gradient nobody needs (a data layer)
    L.backward(on(device, dy), [on(device, x) for x in xs], y, dxs, [False] * 3, n, None)
    for i, (x, w) in enumerate(zip(xs, ws)):
        x2 = x.reshape(w.shape[0], n)
        if dxs[i] is not None:
            assert_close(dxs[i].numpy().reshape(x2.shape), ref.fc_bwd_data(dy, w), what=f"dx{i}")
        assert_close(L.ws[i].grad.numpy(), ref.fc_bwd_weights(x2, dy), what=f"dw{i}")
    assert_close(L.b.grad.numpy(), dy.sum(axis=1), what="db")


def test_multi_input_fc_reference_gradients(rng):
    n = 2
    xs = [rng.standard_normal(s + (n,)) for s in FC3_IN]
    ws = [rng.standard_normal((5, 7)), rng.standard_normal((12, 7)), rng.standard_normal((1, 7))]
    b = rng.standard_normal(7)
    dy = rng.standard_normal((7, n))
    for i in range(3):
        def f_x(x, i=i):
            return fc3_ref([x if j == i else xs[j] for j in range(3)], ws, b)

        def f_w(w, i=i):
            return fc3_ref(xs, [w if j == i else ws[j] for j in range(3)], b)

        dx = ref.fc_bwd_data(dy, ws[i]).reshape(xs[i].shape)
        assert_grad(f_x, xs[i], dy, dx)
        assert_grad(f_w, ws[i], dy, ref.fc_bwd_weights(xs[i].reshape(ws[i].shape[0], n), dy))


@pytest.mark.parametrize("text,in_shapes,order", [(CONV2, CONV2_IN, (1, 0)),
                                                   (FC3, FC3_IN, (2, 0, 1))])
@pytest.mark.parametrize("neuron", [None, "relu", "abs"])
def test_multi_input_layers_run_in_parts(device, rng, text, in_shapes, order, neuron):
    # The two-device executor runs a multi-input layer in parts: forward, the terms of its own
    # device's inputs first, the others when they arrive; backward, the input gradients other
    # devices wait for first, then the rest. In parts or in one call the bits are the same; a
    # sum in another order than the inputs' agrees with the float64 reference. relu: fused in
    # the last term's epilogue; abs: applied after the sum (it reads the layer's input).
    text += f"neuron={neuron}\n" if neuron else ""
    n = 3
    xs = [on(device, rng.standard_normal(s + (n,))) for s in in_shapes]
    dy = rng.standard_normal(standalone(text, in_shapes, "cpu", n).out_shape + (n,))
    outs = []
    for parts in (None, [(0, len(order))], [(0, 1), (1, len(order))]):
        L = standalone(text, in_shapes, device, n)
        set_params(L, np.random.default_rng(7))
        y = convnet.empty(L.out_shape + (n,), device=device)
        if parts is None:
            L.forward(xs, y, n, None)
        else:
            for start, stop in parts:
                L.forward(xs, y, n, None, (order, start, stop))
        dxs = [convnet.empty(x.shape, device=device) for x in xs]
        grads = on(device, dy)
        if parts is None:
            L.backward(grads, xs, y, dxs, [False] * len(xs), n, None)
        else:  # the gradient of the last input first (as if another device waited for it)
            last = len(xs) - 1
            L.backward(grads, xs, y, [dx if i == last else None for i, dx in enumerate(dxs)],
                       [False] * len(xs), n, None, "inputs")
            L.backward(grads, xs, y, [dx if i != last else None for i, dx in enumerate(dxs)],
                       [False] * len(xs), n, None, "rest")
        outs.append([t.numpy().copy() for t in [y, *dxs] + [p.grad for p in L.params]])
    for a, b in zip(outs[1], outs[2]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(outs[0][1:], outs[1][1:]):  # gradients: the same arithmetic
        np.testing.assert_array_equal(a, b)
    ws = [p.value.numpy().astype(np.float64) for p in L.params[:-1]]
    b = L.params[-1].value.numpy().astype(np.float64)
    x64 = [x.numpy().astype(np.float64) for x in xs]
    want = conv2_ref(x64, ws, b) if text.startswith(CONV2) else fc3_ref(x64, ws, b)
    if neuron:
        want = np.maximum(want, 0) if neuron == "relu" else np.abs(want)
    assert_close(outs[0][0], want, what="y in input order")
    assert_close(outs[1][0], want, what=f"y summed in the order {order}")


def test_one_input_layers_keep_their_names():
    # Checkpoints written before layers had several inputs name the weights 'w' and the
    # learning rate 'epsW': a one-input layer keeps both.
    L = standalone(FC3.replace("inputs=a,b,c", "inputs=a").replace("0.1,0.2,0.3", "0.1")
                   .replace("0.01,0.02,0.03", "0.01"), [(5,)], "cpu", 2)
    assert [p.name for p in L.params] == ["w", "b"]
    assert [p.eps_key for p in L.params] == ["epsW", "epsB"]


CMRNORM3 = """[mix]
type=cmrnorm
inputs=a
groups=3
size=5
scale=2.5
pow=0.75
minDiv=2
"""


@pytest.mark.parametrize("n", [1, 3])
def test_cmrnorm_groups_normalise_each_block_alone(device, rng, n):
    # 3 blocks of 4 channels, a window of 5 (it would reach 2 channels into the next block);
    # a large scale so that the sums matter. The reference runs on each block separately.
    L = standalone(CMRNORM3, [(12, 5, 3)], device, n)
    x, dy = rng.standard_normal((12, 5, 3, n)), rng.standard_normal((12, 5, 3, n))
    prior = rng.standard_normal(x.shape)
    y, dx = convnet.empty(x.shape, device=device), on(device, prior)
    L.forward([on(device, x)], y, n, None)
    L.backward(on(device, dy), [on(device, x)], y, [dx], [True], n, None)
    args = dict(size=5, alpha=2.5 / 5, beta=0.75, k=2.0)
    blocks = [slice(4 * g, 4 * g + 4) for g in range(3)]
    y_ref = np.concatenate([ref_norm.lrn_fwd(x[b], **args)[0] for b in blocks])
    dx_ref = np.concatenate([ref_norm.lrn_bwd(dy[b], x[b], **args) for b in blocks]) + prior
    assert_close(y.numpy(), y_ref, what="y")
    assert_close(dx.numpy(), dx_ref, what="dx")
    with pytest.raises(ConfigError, match=r"mix.cfg \[mix\] groups: 10 channels cannot be split"):
        standalone(CMRNORM3, [(10, 5, 3)], device, n)


# -- the 2-GPU model files in cuda-convnet2's syntax ---------------------------------------

def test_cc2_2gpu_model_files_load():
    cfg = load_config(*CC2_2GPU)
    assert cfg.warnings == []
    net = Net(cfg, image_shape=(3, 224, 224), batch_size=2)
    assert net.total_params == PAPER_PARAMS
    by = net.by_name
    assert by["conv3a"].out_shape == (192, 13, 13)
    assert [w.shape for w in by["conv3b"].ws] == [(128, 3, 3, 192)] * 2
    assert [w.shape for w in by["fc2048bb"].ws] == [(2048, 2048)] * 2
    assert [w.shape for w in by["fc1000"].ws] == [(2048, 1000)] * 2
    # A layer without gpu= runs where its first input runs, as in cuda-convnet2.
    gpus = {L.name: L.device.index for L in net.layers}
    assert gpus["rnorm1b"] == gpus["conv4b"] == gpus["pool3b"] == gpus["dropout2b"] == 1
    assert gpus["conv4a"] == gpus["probs"] == gpus["data"] == 0
    assert by["conv5a"].cfg["randSparse"] == (False,)
    assert [s.kind for s in (by["conv3a"].ws[1].eps, by["conv3a"].b.eps)] == ["dexp", "dexp"]
    # One schedule given for both inputs: each weight tensor gets its own (own plateau state).
    assert by["conv3a"].ws[0].eps is not by["conv3a"].ws[1].eps
    assert {"conv3a.epsW.0", "conv3a.epsW.1", "conv3a.epsB", "conv4a.epsW"} <= \
        set(net.schedules())


def cc2_sgd(device, steps=2):
    """The cc2 2-GPU model at 67x67 (the smallest size it takes: pool3 makes 1x1), a few SGD
    steps on one batch: (net, summed losses, weights before)."""
    net = Net(load_config(*CC2_2GPU), image_shape=(3, 67, 67), batch_size=4, seed=1,
              device=device)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, 67, 67, 4)).astype(np.float32)
    labels = np.array([3, 1, 999, 0], np.int32)
    before = {k: v.copy() for k, v in net.state_arrays().items()}  # (host arrays are views)
    costs = [net.train_step(images, labels, step=s, epoch=0, progress=0.0)["logprob"]["logprob"]
             for s in range(steps)]
    return net, np.array(costs), before


def test_cc2_2gpu_model_trains():
    # On the CPU every gpu= maps onto the one CPU device.
    net, costs, before = cc2_sgd("cpu")
    assert np.all(np.isfinite(costs)), costs
    after = net.state_arrays()
    assert len(net.trained) == len(net.params) == 2 * 15 + 7  # 15 layers, 7 with two inputs
    for p in net.params:  # every weight tensor of both towers was updated
        assert np.all(np.isfinite(after[p.full_name])), p.full_name
        assert not np.array_equal(after[p.full_name], before[p.full_name]), p.full_name


@pytest.mark.slow  # ~40 s on the shared 2-core machine
@needs_emu
def test_cc2_2gpu_model_trains_on_two_devices():
    # The towers on emu:0 and emu:1: activations cross exactly at the cross-tower edges, and
    # the losses are the CPU's (measured: 3e-8 relative after one step, 2e-6 after two at this
    # batch of 4 and cc2's rate; allowed 1e-4).
    net, costs, _ = cc2_sgd("emu:0")
    crossing = {(name, str(dev)) for name, dev in net.remote}
    assert crossing == {("data", "emu:1"), ("pool2a", "emu:1"), ("pool2b", "emu:0"),
                        ("pool3a", "emu:1"), ("pool3b", "emu:0"), ("dropout1a", "emu:1"),
                        ("dropout1b", "emu:0"), ("dropout2b", "emu:0")}
    np.testing.assert_allclose(costs, cc2_sgd("cpu")[1], rtol=1e-4)


# -- alexnet-2gpu.cfg is alexnet.cfg written as two towers ------------------------------------

def test_alexnet_2gpu_config():
    net = Net(load_config(ALEXNET_2GPU), image_shape=(3, 224, 224), batch_size=2)
    assert net.total_params == PAPER_PARAMS
    by = net.by_name
    assert by["conv1a"].out_shape == (48, 55, 55) and by["conv2b"].out_shape == (128, 27, 27)
    assert by["conv3a"].out_shape == (192, 13, 13) and by["pool3b"].out_shape == (128, 6, 6)
    assert by["conv3a"].stacked_shape == by["conv3b"].stacked_shape == (256, 13, 13)
    assert [w.shape for w in by["fc6b"].ws] == [(4608, 2048)] * 2
    assert [w.shape for w in by["fc8"].ws] == [(2048, 1000)] * 2
    towers = [L for L in net.layers if L.params or L.name[-2:-1].isdigit()]
    assert {L.device.index for L in towers if L.name.endswith("b")} == {1}
    assert {L.device.index for L in towers if L.name.endswith("a")} == {0}
    one = Net(load_config(ALEXNET), image_shape=(3, 224, 224), batch_size=2)
    assert abs(net.total_flops - one.total_flops) < 1e-6 * one.total_flops


def to_towers(one_arrays, two_net, suffixes=("", ".inc")):
    """The one-device net's arrays (layer.w / layer.b, and .inc) laid out for the two-tower
    net: layer X of the one-device net is XA / XB (tower a / b) or X with two inputs. A tower
    takes its half of the filters or outputs (last axis); weights of input i of a two-input
    layer take half i of the input channels or features (first axis): the first half of the
    one-device net's channels is tower a's. The weights of a groups=2 layer are per group
    already: no input split."""
    out = {}
    for name, shape in ((p.full_name, p.shape) for p in two_net.params):
        layer, pname = name.split(".")
        tower = None
        if layer[-1] in "ab" and layer[:-1] + ".b" in one_arrays:
            layer, tower = layer[:-1], "ab".index(layer[-1])
        for suffix in suffixes:
            a = one_arrays[f"{layer}.{'b' if pname == 'b' else 'w'}{suffix}"]
            if tower is not None:
                half = a.shape[-1] // 2
                a = a[..., tower * half:(tower + 1) * half]
            if pname[1:]:  # w0 / w1
                half = a.shape[0] // 2
                a = a[int(pname[1:]) * half:(int(pname[1:]) + 1) * half]
            assert a.shape == shape, (name, a.shape, shape)
            out[name + suffix] = np.ascontiguousarray(a)
    return out


def assert_matches(actual, expected, rel, what):
    """|actual - expected| <= rel * (the largest |expected| entry of the tensor)."""
    assert actual.shape == expected.shape, what
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert err <= rel * scale, f"{what}: max difference {err:.3g}, {rel:g} x {scale:.3g} allowed"


def grads(net):
    return {p.full_name: p.grad.numpy() for p in net.params}


def without_dropout(path):
    """The config with every dropout layer disabled: the two nets draw their masks from
    different per-layer streams, so they can only agree without dropout."""
    cfg = load_config(path)
    for spec in cfg.layers:
        if spec.text("type").startswith("dropout"):
            spec.values["enable"] = ("false", path)
    return cfg


def twin_nets(one_path, two_path, image, batch, device, seed=5):
    one = Net(without_dropout(one_path), image_shape=image, batch_size=batch, device=device,
              seed=seed)
    two = Net(without_dropout(two_path), image_shape=image, batch_size=batch, device=device,
              seed=seed)
    two.load_state_arrays(to_towers(one.state_arrays(), two))
    return one, two


def batch_of(image, n, classes, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.standard_normal(image + (n,)) * 50).astype(np.float32)
    return images, (np.arange(n) * 7 % classes).astype(np.int32)


def test_alexnet_2gpu_is_alexnet(tmp_path):
    # The full nets at 67x67 (the smallest size they take), on one device: the same loss and,
    # mapped the same way, the same gradients. float32, different summation orders (a sum over
    # 256 channels vs two sums of 128 added). Measured: loss 3.5e-8 relative, gradients 7e-7 of
    # each tensor's largest entry; allowed: 1e-6 and 1e-5.
    image = (3, 67, 67)
    one, two = twin_nets(ALEXNET, ALEXNET_2GPU, image, 4, "cpu")
    images, labels = batch_of(image, 4, 1000)
    s1 = one.forward(images, labels, train=True)["logprob"]
    s2 = two.forward(images, labels, train=True)["logprob"]
    np.testing.assert_allclose(s2["logprob"], s1["logprob"], rtol=1e-6)
    one.backward()
    two.backward()
    mapped = to_towers(grads(one), two, suffixes=("",))
    for k, g in grads(two).items():
        assert_matches(g, mapped[k], 1e-5, k)


# -- the small twins: several SGD steps on cpu and on two emulated devices --------------------

TINY_IMAGE = (3, 24, 24)
STEPS = 5


def sgd(net, images, labels, steps=STEPS):
    return np.array([net.train_step(images, labels, step=s, epoch=0, progress=0.0)
                     ["logprob"]["logprob"] for s in range(steps)])


@pytest.mark.parametrize("device", ["cpu", pytest.param("emu:0", marks=needs_emu)])
def test_two_towers_train_like_one_device(device):
    # 5 SGD steps of the two-tower net (on emu: towers on emu:0 and emu:1) and of its
    # one-device twin from the same weights. Measured on cpu and emu: losses 5e-8 relative,
    # weights 5e-7 of each tensor's largest entry; allowed: 1e-6 and 1e-5.
    one, two = twin_nets(TINY_ALEXNET, TINY_ALEXNET_2GPU, TINY_IMAGE, 8, device)
    if device != "cpu":
        assert {str(d) for d in two.devices} == {"emu:0", "emu:1"}
        assert two.by_name["conv3b"].device == "emu:1"
    images, labels = batch_of(TINY_IMAGE, 8, 10)
    l1, l2 = sgd(one, images, labels), sgd(two, images, labels)
    assert l1[-1] < l1[0]
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    mapped = to_towers(one.state_arrays(), two)
    for k, v in two.state_arrays().items():
        if not k.endswith(".inc"):
            assert_matches(v, mapped[k], 1e-5, k)


@needs_emu
def test_checkpoint_moves_between_placements(tmp_path):
    # A checkpoint of the net on two devices resumes on one, and the other way round: the same
    # parameter names and arrays, bit for bit, and the next step gives the same loss.
    images, labels = batch_of(TINY_IMAGE, 8, 10)
    nets = {}
    for where in ("emu:0", "cpu"):
        nets[where] = Net(without_dropout(TINY_ALEXNET_2GPU), image_shape=TINY_IMAGE,
                          batch_size=8, device=where, seed=2, single_device=where == "cpu")
    assert len(nets["emu:0"].devices) == 2 and len(nets["cpu"].devices) == 1
    for src, dst in (("emu:0", "cpu"), ("cpu", "emu:0")):
        sgd(nets[src], images, labels, steps=2)
        path = checkpoint.save(str(tmp_path / src.replace(":", "")), 2,
                               nets[src].state_arrays(), {"from": src})
        meta, arrays = checkpoint.load(path)
        assert sorted(arrays) == sorted(nets[dst].state_arrays())
        nets[dst].load_state_arrays(arrays)
        for k, v in nets[dst].state_arrays().items():
            np.testing.assert_array_equal(v, arrays[k], err_msg=k)
        a = nets[src].forward(images, labels, train=False)["logprob"]["logprob"]
        b = nets[dst].forward(images, labels, train=False)["logprob"]["logprob"]
        np.testing.assert_allclose(b, a, rtol=1e-5)


@needs_emu
@pytest.mark.parametrize("first, then", [("emu:0", "cpu"), ("cpu", "emu:0")])
def test_training_resumes_on_another_placement(tmp_path, capsys, first, then):
    # One epoch with the towers on emu:0/emu:1 (or on the one CPU device), then the second epoch
    # resumed from its checkpoint on the other placement: the same run as two epochs on the CPU,
    # up to the float32 rounding of the emulated kernels (measured: 6e-7 of each tensor's
    # largest entry; allowed: 1e-5).
    data = ["--data", "synthetic:size=24,train=64,test=16,classes=10", "--batch-size", "16"]
    assert main([TINY_ALEXNET_2GPU, *data, "--epochs", "2", "--save-dir", str(tmp_path / "cpu")]) \
        == 0
    split = str(tmp_path / "split")
    assert main([TINY_ALEXNET_2GPU, *data, "--epochs", "1", "--device", first, "--save-dir",
                 split]) == 0
    assert main([TINY_ALEXNET_2GPU, "--resume", split, "--epochs", "2", "--device", then]) == 0
    assert "resumed from" in capsys.readouterr().out
    m1, a1 = checkpoint.load(str(tmp_path / "cpu"))
    m2, a2 = checkpoint.load(split)
    assert m1["step"] == m2["step"] == 8 and a1.keys() == a2.keys()
    for k in a1:
        assert_matches(a2[k], a1[k], 1e-5, k)


# -- misconfiguration ---------------------------------------------------------------------------

HEAD = "[data]\ntype=data\ndataIdx=0\n\n[labels]\ntype=data\ndataIdx=1\n\n"
LEARN = "epsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0\n"
TAIL = ("[fc]\ntype=fc\ninputs=mix\noutputs=3\n" + LEARN +
        "\n[probs]\ntype=softmax\ninputs=fc\n\n[cost]\ntype=cost.logreg\ninputs=labels,probs\n")
TWO = ("[c1]\ntype=conv\ninputs=data\nfilters=4\nfilterSize=3\npadding=1\n" + LEARN +
       "\n[c2]\ntype=conv\ninputs=data\nfilters=4\nfilterSize=3\npadding=1\ngpu=1\n" + LEARN)


def build(tmp_path, mix, device="cpu"):
    d = tmp_path / "towers.cfg"
    d.write_text(HEAD + TWO + "\n[mix]\n" + mix + "\n" + TAIL)
    return Net(load_config(str(d)), image_shape=(3, 8, 8), batch_size=2, device=device)


MIX = "type=conv\ninputs=c1,c2\nfilters=4\nfilterSize=3\npadding=1\n" + LEARN


@pytest.mark.parametrize("change, key, words", [
    (("filterSize=3", "filterSize=3,3,3"), "filterSize", "3 values for 2 inputs (c1,c2)"),
    (("wc=0", "wc=0,0,0"), "wc", "3 values for 2 inputs"),
    (("epsW=0.01", "epsW=0.01,step[base=0.1;epochs=1,2],0.1"), "epsW", "3 values for 2 inputs"),
    (("filters=4", "filters=4,8"), "filters", "input 1 ('c2') makes 8 filters"),
    (("padding=1", "padding=1,0"), "inputs", "input 'c2': makes 6x6 outputs"),
    (("filters=4", "filters=4\nrandSparse=1"), "randSparse", "this version does not support"),
    (("filters=4", "filters=4\nchannels=4,3"), "inputs", "input 'c2': has 4 channels but mix "
                                                        "says channels=3"),
])
def test_mismatched_per_input_keys_name_file_section_key(tmp_path, change, key, words):
    with pytest.raises(ConfigError) as e:
        build(tmp_path, MIX.replace(*change))
    assert (e.value.section, e.value.key) == ("mix", key)
    assert e.value.file.endswith("towers.cfg") and words in str(e.value), str(e.value)


def test_rand_sparse_zero_and_lists_are_accepted(tmp_path):
    net = build(tmp_path, MIX.replace("filters=4", "filters=4,4\nrandSparse=0") +
                "initW=0.1,0.2\n")
    mix = net.by_name["mix"]
    assert mix.cfg["initW"] == (0.1, 0.2) and mix.cfg["randSparse"] == (False, False)
    assert [p.full_name for p in net.params if p.layer is mix] == ["mix.w0", "mix.w1", "mix.b"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("emu:0", marks=needs_emu)])
def test_net_with_a_two_input_layer_gradients(tmp_path, device):
    # c1 (gpu 0) and c2 (gpu 1) both read the image; mix reads both: every parameter against
    # finite differences of the cost, as `--check-grads` does.
    net = build(tmp_path, MIX.replace("filterSize=3", "filterSize=3,5").replace(
        "padding=1", "padding=1,2") + "neuron=tanh\n", device)
    ds = data.open_source("synthetic:size=8,train=16,test=16,classes=3", workers=0,
                          color_noise=0.0, flip=False)
    images, labels = (a[..., :2].copy() for a in next(iter(ds.test_batches(16))))
    errors = net_grad_errors(net, images, labels, samples=6, steps=(1e-3, 1e-4))
    assert sorted(errors) == sorted(p.full_name for p in net.params)
    assert {"mix.w0", "mix.w1", "mix.b"} <= set(errors)
    bad = {k: v for k, v in errors.items() if v[0] > 0.05}
    assert not bad, bad


@needs_emu
def test_device_index_that_does_not_exist(tmp_path):
    build(tmp_path, MIX, device="emu:0")  # gpu=1 -> emu:1 exists
    with pytest.raises(ConfigError) as e:
        build(tmp_path, MIX, device="emu:1")  # gpu=1 -> emu:2 does not
    assert (e.value.section, e.value.key) == ("c2", "gpu")
    assert "emu:2 does not exist" in str(e.value) and e.value.file.endswith("towers.cfg")


@needs_emu
def test_training_cli_reports_a_missing_device_in_one_line(tmp_path, capsys):
    # tiny-alexnet-2gpu.cfg on emu:1: its gpu=1 layers would need emu:2.
    code = main([TINY_ALEXNET_2GPU, "--device", "emu:1", "--data",
                 "synthetic:size=24,train=64,test=16,classes=10", "--save-dir",
                 str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{TINY_ALEXNET_2GPU} [conv1b] gpu: gpu=1 with the run on emu:1: emu:2 does not " \
           "exist" in err, err
