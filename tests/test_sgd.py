import numpy as np
import pytest

import convnet
from convnet import ops, rng as crng


def paper_update_f32(w, v, g, lr, mom, wd):
    """The specified rounding (csrc/common/sgd.h), in float32 numpy: each product and difference
    rounded to float32, no fused multiply-add."""
    f = np.float32
    lrwd = f(f(lr) * f(wd))
    v2 = (f(mom) * v - lrwd * w) - f(lr) * g
    return w + v2, v2


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1001, 4099])
@pytest.mark.parametrize("wd", [0.0005, 0.0], ids=["weights", "biases"])
def test_matches_formula_exactly(device, rng, n, wd):
    w = rng.standard_normal(n).astype(np.float32) * 0.01
    v = rng.standard_normal(n).astype(np.float32) * 0.001
    g = rng.standard_normal(n).astype(np.float32)
    tw, tv, tg = (convnet.tensor(a, device) for a in (w, v, g))
    for _ in range(3):
        ops.sgd_update(tw, tv, tg, 0.01, 0.9, wd)
        w, v = paper_update_f32(w, v, g, 0.01, 0.9, wd)
    np.testing.assert_array_equal(tw.numpy(), w)
    np.testing.assert_array_equal(tv.numpy(), v)


def test_equivalent_to_cuda_convnet2(rng):
    # cc2: inc = mom*inc + eps*(grad_logprob - wc*w); w += inc, with grad_logprob = -grad.
    w0 = rng.standard_normal(100).astype(np.float32)
    inc = rng.standard_normal(100).astype(np.float32) * 0.1
    g = rng.standard_normal(100).astype(np.float32)
    w, v = w0.copy(), inc.copy()
    ops.sgd_update(w, v, g, 0.01, 0.9, 0.0005)
    inc64 = 0.9 * inc.astype(np.float64) + 0.01 * (-g.astype(np.float64) - 0.0005 * w0)
    np.testing.assert_allclose(v, inc64, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(w, w0 + inc64, rtol=1e-5, atol=1e-7)


def test_unaligned_and_shaped(device, rng):
    w = rng.standard_normal((5, 7)).astype(np.float32)
    v = np.zeros((5, 7), np.float32)
    g = rng.standard_normal((5, 7)).astype(np.float32)
    tw, tv, tg = (convnet.tensor(a, device) for a in (w, v, g))
    # Rows 1..3: 28 bytes into the buffers, the CUDA kernel's scalar path.
    ops.sgd_update(tw.narrow(1, 3), tv.narrow(1, 3), tg.narrow(1, 3), 0.1, 0.9, 0.01)
    w2, v2 = paper_update_f32(w[1:4], v[1:4], g[1:4], 0.1, 0.9, 0.01)
    np.testing.assert_array_equal(tw.numpy()[1:4], w2)
    np.testing.assert_array_equal(tv.numpy()[1:4], v2)
    np.testing.assert_array_equal(tw.numpy()[0], w[0])


def test_bad_arguments(device):
    w = convnet.zeros((3, 4), device=device)
    with pytest.raises(ValueError, match=r"sgd_update: v has shape \(12,\) but w has shape \(3, 4\)"):
        ops.sgd_update(w, convnet.zeros(12, device=device), convnet.zeros((3, 4), device=device),
                       0.01, 0.9, 0.0)
    with pytest.raises(ValueError, match="sgd_update: w, v and grad must be three different"):
        ops.sgd_update(w, w, convnet.zeros((3, 4), device=device), 0.01, 0.9, 0.0)
    with pytest.raises(TypeError, match="sgd_update: grad must be float32, got int32"):
        ops.sgd_update(w, convnet.zeros((3, 4), device=device),
                       convnet.zeros((3, 4), np.int32, device=device), 0.01, 0.9, 0.0)


def test_gaussian_init_matches_numpy_port():
    stream = crng.RNG_INIT | 3
    w = ops.gaussian_init((7, 11, 13), 0.01, seed=42, stream=stream)
    assert w.shape == (7, 11, 13) and w.dtype == np.float32 and str(w.device) == "cpu"
    ref = (0.01 * crng.normal(42, stream, 0, np.arange(w.size))).astype(np.float32)
    # Bit-equal unless numpy's float64 log/cos and the C library's differ in the last bit and that
    # moves a float32 rounding: allow a handful of 1-ulp differences, no more.
    got = w.numpy().ravel()
    diff = got != ref
    assert diff.sum() <= 2, diff.sum()
    np.testing.assert_array_max_ulp(got, ref, maxulp=1)


def test_gaussian_init_statistics_and_streams():
    a = ops.gaussian_init(200001, 0.5, seed=1, stream=crng.RNG_INIT | 1).numpy()
    b = ops.gaussian_init(200001, 0.5, seed=1, stream=crng.RNG_INIT | 2).numpy()
    assert abs(a.mean()) < 0.005 and abs(a.std() - 0.5) < 0.005
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    np.testing.assert_array_equal(a, ops.gaussian_init(200001, 0.5, seed=1,
                                                       stream=crng.RNG_INIT | 1).numpy())


def test_gaussian_init_same_bits_on_every_device(device):
    host = ops.gaussian_init((64, 3), 0.01, seed=5, stream=crng.RNG_INIT)
    dev = ops.gaussian_init((64, 3), 0.01, seed=5, stream=crng.RNG_INIT, device=device)
    assert str(dev.device) == device.split("/")[0]
    np.testing.assert_array_equal(dev.numpy(), host.numpy())


def test_gaussian_init_bad_arguments():
    with pytest.raises(ValueError, match=r"gaussian_init: seed must be an integer in \[0, 2\^64\)"):
        ops.gaussian_init(3, 0.01, seed=-1, stream=0)
    with pytest.raises(ValueError, match="gaussian_init: std must be >= 0"):
        ops.gaussian_init(3, -1.0, seed=0, stream=0)
