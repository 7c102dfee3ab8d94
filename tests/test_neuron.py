import numpy as np
import pytest

import convnet
from convnet import ops

from gradcheck import assert_close, assert_grad
from ref_neurons import CASES, neuron_fwd, neuron_grad, sample

IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("kind,a,b,sampler", CASES, ids=IDS)
def test_reference_gradient(kind, a, b, sampler, rng):
    x = sample(sampler, 23, rng)
    dy = rng.standard_normal(23)
    assert_grad(lambda t: neuron_fwd(t, kind, a, b), x, dy, dy * neuron_grad(x, kind, a, b))


@pytest.mark.parametrize("n", [1, 7, 1001])
@pytest.mark.parametrize("kind,a,b,sampler", CASES, ids=IDS)
def test_matches_reference(device, kind, a, b, sampler, n, rng):
    x = sample(sampler, n, rng).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    prev = rng.standard_normal(n).astype(np.float32)
    tx, tdy = convnet.tensor(x, device), convnet.tensor(dy, device)
    y = ops.neuron_fwd(tx, kind, a, b)
    assert_close(y.numpy(), neuron_fwd(x, kind, a, b), rtol=2e-6, atol=1e-6, what="fwd")
    reads = convnet.device.module_for("cpu").neuron_bwd_reads(ops.neuron_kinds().index(kind))
    xin = tx if reads == "x" else None
    yin = y if reads == "y" else None
    g = dy.astype(np.float64) * neuron_grad(x, kind, a, b)
    dx = ops.neuron_bwd(tdy, xin, yin, kind, a, b)
    # Gradients from y carry y's rounding (tanh near saturation, sqrt, logistic): a looser rtol.
    assert_close(dx.numpy(), g, rtol=2e-5, atol=2e-6, what="bwd")
    acc = convnet.tensor(prev, device)
    ops.neuron_bwd(tdy, tx, y, kind, a, b, out=acc, accumulate=True)
    assert_close(acc.numpy(), prev + g, rtol=2e-5, atol=2e-6, what="bwd accumulate")


def test_bracket_spelling_and_in_place(device, rng):
    x = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    t = convnet.tensor(x, device)
    y = ops.neuron_fwd(t, "tanh[1.7159,0.6667]", out=t)
    assert y is t
    assert_close(t.numpy(), neuron_fwd(x, "tanh", 1.7159, 0.6667), rtol=2e-6, atol=1e-6)
    dy = convnet.tensor(np.ones_like(x), device)
    ops.neuron_bwd(dy, None, t, "tanh[1.7159,0.6667]", out=dy)  # in place on dy
    assert_close(dy.numpy(), neuron_grad(x, "tanh", 1.7159, 0.6667), rtol=2e-5, atol=2e-6)


def test_unaligned_views(device, rng):
    # Rows of 7 floats: row 1 starts 28 bytes in, so the CUDA kernels take their scalar path.
    x = rng.standard_normal((4, 7)).astype(np.float32)
    t = convnet.tensor(x, device).narrow(1, 3)
    y = convnet.zeros((3, 7), device=device)
    ops.neuron_fwd(t, "relu", out=y)
    np.testing.assert_array_equal(y.numpy(), np.maximum(x[1:], 0))
    dx = ops.neuron_bwd(t, None, y, "relu")
    np.testing.assert_array_equal(dx.numpy(), np.where(x[1:] > 0, x[1:], 0))


def test_relu_gradient_at_zero_is_zero(device):
    x = convnet.tensor(np.array([-1, 0, 0, 2], np.float32), device)
    y = ops.neuron_fwd(x, "relu")
    dx = ops.neuron_bwd(convnet.tensor(np.ones(4, np.float32), device), None, y, "relu")
    np.testing.assert_array_equal(dx.numpy(), [0, 0, 0, 1])


def test_softrelu_is_stable(device):
    x = convnet.tensor(np.array([-200, -30, 0, 30, 200], np.float32), device)
    y = ops.neuron_fwd(x, "softrelu").numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.logaddexp(0, [-200, -30, 0, 30, 200]), rtol=1e-6, atol=1e-40)


def test_parse_neuron():
    assert ops.parse_neuron("relu") == ("relu", 0.0, 0.0)
    assert ops.parse_neuron("brelu[6]") == ("brelu", 6.0, 0.0)
    assert ops.parse_neuron("linear[2, -1]") == ("linear", 2.0, -1.0)
    assert ops.parse_neuron("tanh", 1, 2) == ("tanh", 1.0, 2.0)
    with pytest.raises(ValueError, match="unknown neuron 'rectified'"):
        ops.parse_neuron("rectified")
    with pytest.raises(ValueError, match=r"tanh\[1\]': tanh takes 2 parameter\(s\), got 1"):
        ops.parse_neuron("tanh[1]")
    with pytest.raises(ValueError, match="parameters must be numbers"):
        ops.parse_neuron("brelu[x]")


def test_bad_arguments(device):
    x = convnet.zeros((3, 4), device=device)
    with pytest.raises(ValueError, match=r"neuron_fwd: tanh\[a,b\] needs a != 0"):
        ops.neuron_fwd(x, "tanh")
    with pytest.raises(ValueError, match="neuron_fwd: brelu\\[a\\] needs a > 0, got a = -1"):
        ops.neuron_fwd(x, "brelu[-1]")
    with pytest.raises(ValueError, match=r"neuron_fwd: y has shape \(5,\) but x has shape \(3, 4\)"):
        ops.neuron_fwd(x, "relu", out=convnet.zeros(5, device=device))
    with pytest.raises(ValueError, match="neuron_bwd: the relu gradient reads y .* got None"):
        ops.neuron_bwd(x, x, None, "relu")
    with pytest.raises(ValueError, match="neuron_bwd: the square gradient reads x .* got None"):
        ops.neuron_bwd(x, None, x, "square")
    with pytest.raises(TypeError, match="neuron_bwd: y must be float32, got int32"):
        ops.neuron_bwd(x, None, convnet.zeros((3, 4), np.int32, device=device), "relu")
    with pytest.raises(ValueError, match="accumulate=True needs out"):
        ops.neuron_bwd(x, None, x, "relu", accumulate=True)


def test_numpy_and_device_mixing():
    x = np.ones((2, 3), np.float32)
    y = ops.neuron_fwd(x, "square")
    np.testing.assert_array_equal(y.numpy(), x)
    with pytest.raises(ValueError, match="neuron_fwd: x: numpy array .* not C-contiguous"):
        ops.neuron_fwd(np.ones((4, 6), np.float32)[:, ::2], "relu")
