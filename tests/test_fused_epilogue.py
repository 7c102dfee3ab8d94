"""The forward ops' fused epilogue (csrc/common/epilogue.h): conv_fwd / fc_fwd with the layer's
bias and ReLU applied as the GEMM stores y. Every variant of every backend against the float64
reference relu(conv + b), with and without accumulation; the same bits as the unfused ops run one
after the other; the two emulated thread orders give the same bits; and the layer graph fuses the
ReLU of conv and fc layers (and only where it may) without changing a net's output."""
import numpy as np
import pytest

import convnet
from convnet import ops
from convnet.config import load_config
from convnet.net import Net

import ref_conv as ref
from gradcheck import assert_close
from test_conv import _on, _run_variant as _run, _variants
from test_net import TINY

# (C, H, W, N, F, fs, padding, stride, groups): batch 1, groups with unaligned slices, stride
# with round-up overhang, F = 67 crossing the 64-row tiles.
SHAPES = [
    (5, 7, 9, 1, 3, 3, 0, 1, 1),
    (10, 9, 7, 3, 10, 3, 1, 2, 2),
    (3, 6, 5, 2, 67, 3, 1, 1, 1),
    (2, 12, 11, 4, 8, 5, 0, 4, 1),
]
IDS = ["x".join(map(str, s)) for s in SHAPES]
# (inputs, outputs, images): odd sizes, batch 1, outputs crossing a 64-row tile
FC_SHAPES = [(7, 5, 1), (33, 67, 9), (130, 10, 4)]


def _relu(a):
    return np.maximum(a, 0.0)


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def _conv_problem(rng, shape):
    c, h, w, n, f, fs, pad, stride, groups = shape
    x = rng.standard_normal((c, h, w, n))
    wt = rng.standard_normal((c // groups, fs, fs, f))
    b = rng.standard_normal(f)
    ho, wo = ref.out_size(h, fs, pad, stride), ref.out_size(w, fs, pad, stride)
    prev = rng.standard_normal((f, ho, wo, n))
    return x, wt, b, prev, dict(padding=pad, stride=stride, groups=groups)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_fwd_fused(device, rng, shape):
    x, w, b, prev, kw = _conv_problem(rng, shape)
    conv = ref.conv_fwd(x, w, **kw)
    bias = b[:, None, None, None]
    for v in _variants("conv_fwd", device, shape):
        xd, wd, bd = _on(device, x), _on(device, w), _on(device, b)
        y = _run(ops.conv_fwd, xd, wd, bd, relu=True, variant=v, **kw).numpy()
        assert_close(y, _relu(conv + bias), what=f"conv_fwd bias+relu variant {v}")
        assert (y >= 0).all()
        # Unfused: conv, bias, ReLU one after the other give the same bits.
        y2 = ops.conv_fwd(xd, wd, variant=v, **kw)
        ops.neuron_fwd(ops.bias_fwd(y2, bd), "relu", out=y2)
        assert np.array_equal(_bits(y), _bits(y2.numpy())), f"variant {v}: fused != unfused"
        yb = ops.conv_fwd(xd, wd, bd, variant=v, **kw).numpy()
        assert_close(yb, conv + bias, what=f"conv_fwd bias variant {v}")
        ya = ops.conv_fwd(xd, wd, bd, relu=True, out=_on(device, prev), accumulate=True,
                          variant=v, **kw).numpy()
        assert_close(ya, _relu(prev + conv + bias), what=f"conv_fwd accumulate variant {v}")
        yr = ops.conv_fwd(xd, wd, relu=True, variant=v, **kw).numpy()
        assert_close(yr, _relu(conv), what=f"conv_fwd relu, no bias, variant {v}")


@pytest.mark.parametrize("i,o,n", FC_SHAPES)
def test_fc_fwd_fused(device, rng, i, o, n):
    x, w, b = rng.standard_normal((i, n)), rng.standard_normal((i, o)), rng.standard_normal(o)
    prev = rng.standard_normal((o, n))
    want = ref.fc_fwd(x, w, b)
    for v in _variants("fc_fwd", device):
        xd, wd, bd = _on(device, x), _on(device, w), _on(device, b)
        y = _run(ops.fc_fwd, xd, wd, bd, variant=v, relu=True).numpy()
        assert_close(y, _relu(want), what=f"fc_fwd bias+relu variant {v}")
        y2 = ops.fc_fwd(xd, wd, bd, variant=v)
        ops.neuron_fwd(y2, "relu", out=y2)
        assert np.array_equal(_bits(y), _bits(y2.numpy())), f"variant {v}: fused != unfused"
        ya = ops.fc_fwd(xd, wd, bd, out=_on(device, prev), accumulate=True, variant=v,
                        relu=True).numpy()
        assert_close(ya, _relu(prev + want), what=f"fc_fwd accumulate variant {v}")


def test_fused_thread_orders_bit_identical(rng):
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    previous = emu.thread_order()
    x, w, b, prev, kw = _conv_problem(rng, SHAPES[1])
    fx, fw = rng.standard_normal((33, 9)), rng.standard_normal((33, 67))
    fb = rng.standard_normal(67)
    try:
        runs = []
        for order in ("forward", "reverse"):
            emu.set_thread_order(order)
            out = {}
            for v in _variants("conv_fwd", "emu"):
                out[f"conv {v}"] = ops.conv_fwd(_on("emu:0", x), _on("emu:0", w), _on("emu:0", b),
                                                relu=True, variant=v, **kw).numpy()
            for v in _variants("fc_fwd", "emu"):
                out[f"fc {v}"] = ops.fc_fwd(_on("emu:0", fx), _on("emu:0", fw), _on("emu:0", fb),
                                            variant=v, relu=True).numpy()
            runs.append(out)
        for name in runs[0]:
            assert np.array_equal(_bits(runs[0][name]), _bits(runs[1][name])), \
                f"{name}: thread orders differ"
    finally:
        emu.set_thread_order(previous)


def test_bad_bias(device):
    x, w = _on(device, np.ones((2, 5, 5, 1))), _on(device, np.ones((2, 3, 3, 4)))
    with pytest.raises(ValueError, match="conv_fwd.*b"):
        ops.conv_fwd(x, w, _on(device, np.ones(3)), relu=True)
    with pytest.raises(ValueError, match="fc_fwd.*b"):
        ops.fc_fwd(_on(device, np.ones((3, 2))), _on(device, np.ones((3, 4))),
                   _on(device, np.ones(5)), relu=True)


def test_layers_fuse_relu_only_where_they_may():
    net = Net(load_config(TINY), image_shape=(3, 16, 16), device="cpu", batch_size=4, seed=0)
    layers = {L.name: L for L in net.layers}
    assert layers["conv1"].neuron[0] == "relu" and layers["conv1"].fused_neuron
    assert not layers["fc2"].fused_neuron  # no neuron
    assert not any(L.fused_neuron for L in net.layers if L.TYPE not in ("conv", "fc"))


def test_fused_net_output_unchanged(rng, monkeypatch):
    """The tiny net's scores with its conv1 ReLU fused into the conv, and with fusion turned off
    (bias and ReLU as separate passes): the same bits, on each backend."""
    images = rng.standard_normal((3, 16, 16, 4)).astype(np.float32)
    labels = np.arange(4, dtype=np.int32) % 10
    from convnet.layers.weights import WeightLayer
    for device in ["cpu"] + (["emu:0"] if "emu" in convnet.backends() else []):
        outs = []
        for fuse in (True, False):
            monkeypatch.setattr(WeightLayer, "FUSES_RELU", fuse)
            net = Net(load_config(TINY), image_shape=(3, 16, 16), device=device, batch_size=4,
                      seed=3)
            assert net.layers[[L.name for L in net.layers].index("conv1")].fused_neuron == fuse
            net.forward(images, labels, train=False)
            outs.append(net.output("fc2", 4))
        assert np.array_equal(_bits(outs[0]), _bits(outs[1])), device
