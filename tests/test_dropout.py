import numpy as np
import pytest

import convnet
from convnet import ops, rng as crng

from gradcheck import assert_close
from ref_dropout import dropout_bwd, dropout_fwd, dropout_mask

STREAM = crng.RNG_DROPOUT | 6  # fc6's dropout


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1001, 4099])
@pytest.mark.parametrize("inverted", [True, False], ids=["inverted", "paper"])
def test_train_matches_reference_mask(device, rng, n, inverted):
    keep, seed, step = 0.5, 12345678901, 17
    x = rng.standard_normal(n).astype(np.float32)
    y, mask = ops.dropout_fwd(convnet.tensor(x, device), keep, seed=seed, stream=STREAM,
                              step=step, inverted=inverted)
    ref_mask = dropout_mask(n, keep, seed, STREAM, step)
    np.testing.assert_array_equal(mask.numpy(), ref_mask)
    assert mask.dtype == np.uint8 and mask.shape == (n,)
    assert_close(y.numpy(), dropout_fwd(x, ref_mask, keep, inverted, True), rtol=1e-7, atol=0)
    dy = rng.standard_normal(n).astype(np.float32)
    dx = ops.dropout_bwd(convnet.tensor(dy, device), mask, keep, inverted)
    assert_close(dx.numpy(), dropout_bwd(dy, ref_mask, keep, inverted), rtol=1e-7, atol=0)
    prev = rng.standard_normal(n).astype(np.float32)
    acc = convnet.tensor(prev, device)
    ops.dropout_bwd(convnet.tensor(dy, device), mask, keep, inverted, out=acc, accumulate=True)
    assert_close(acc.numpy(), prev + dropout_bwd(dy, ref_mask, keep, inverted), rtol=1e-6)


def test_masks_identical_across_backends(device, rng):
    x = rng.standard_normal((37, 11)).astype(np.float32)
    for step in (0, 1, 2**32 - 1):
        _, m_cpu = ops.dropout_fwd(x, 0.3, seed=7, stream=STREAM, step=step)
        _, m_dev = ops.dropout_fwd(convnet.tensor(x, device), 0.3, seed=7, stream=STREAM,
                                   step=step)
        np.testing.assert_array_equal(m_dev.numpy(), m_cpu.numpy())


def test_keep_fraction_and_fresh_masks(device):
    n = 20011
    x = convnet.tensor(np.ones(n, np.float32), device)
    for keep in (0.1, 0.5, 0.9):
        _, m = ops.dropout_fwd(x, keep, seed=1, stream=STREAM, step=0)
        frac = m.numpy().mean()
        assert abs(frac - keep) < 4 * np.sqrt(keep * (1 - keep) / n), (keep, frac)
    _, a = ops.dropout_fwd(x, 0.5, seed=1, stream=STREAM, step=0)
    _, b = ops.dropout_fwd(x, 0.5, seed=1, stream=STREAM, step=1)
    _, c = ops.dropout_fwd(x, 0.5, seed=1, stream=STREAM + 1, step=0)
    _, d = ops.dropout_fwd(x, 0.5, seed=1, stream=STREAM, step=0)
    assert (a.numpy() != b.numpy()).mean() > 0.4 and (a.numpy() != c.numpy()).mean() > 0.4
    np.testing.assert_array_equal(a.numpy(), d.numpy())
    _, ones = ops.dropout_fwd(x, 1.0, seed=1, stream=STREAM, step=0)
    assert ones.numpy().all()


@pytest.mark.parametrize("inverted", [True, False], ids=["inverted", "paper"])
def test_test_mode(device, rng, inverted):
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y, mask = ops.dropout_fwd(convnet.tensor(x, device), 0.5, seed=0, stream=STREAM, step=0,
                              inverted=inverted, train=False)
    assert mask is None
    assert_close(y.numpy(), x if inverted else 0.5 * x.astype(np.float64), rtol=1e-7, atol=0)


def test_expected_value_matches_test_mode(device):
    # Both variants: the mean training output equals the test-time output.
    n = 20000
    x = convnet.tensor(np.full(n, 3.0, np.float32), device)
    for inverted in (True, False):
        y, _ = ops.dropout_fwd(x, 0.5, seed=3, stream=STREAM, step=5, inverted=inverted)
        t, _ = ops.dropout_fwd(x, 0.5, seed=3, stream=STREAM, step=5, inverted=inverted,
                               train=False)
        assert abs(y.numpy().mean() - t.numpy().mean()) < 0.05 * t.numpy().mean()


def test_dropped_units_are_zero_even_for_inf(device):
    x = np.array([np.inf, -np.inf, np.nan, 1.0] * 8, np.float32)
    y, m = ops.dropout_fwd(convnet.tensor(x, device), 0.5, seed=2, stream=STREAM, step=0)
    m = m.numpy().astype(bool)
    assert (~m).any() and (y.numpy()[~m] == 0).all()


def test_in_place_and_unaligned(device, rng):
    x = rng.standard_normal((5, 7)).astype(np.float32)
    t = convnet.tensor(x, device)
    view = t.narrow(1, 3)  # starts 28 bytes in: the CUDA kernels' scalar path
    y, m = ops.dropout_fwd(view, 0.5, seed=9, stream=STREAM, step=4, out=view)
    assert y is view
    ref = dropout_mask(21, 0.5, 9, STREAM, 4)
    np.testing.assert_array_equal(m.numpy().ravel(), ref)
    got = t.numpy()
    np.testing.assert_array_equal(got[0], x[0])
    np.testing.assert_array_equal(got[4], x[4])
    assert_close(got[1:4].ravel(), x[1:4].ravel() * ref * 2.0, rtol=1e-7, atol=0)


def test_bad_arguments(device):
    x = convnet.zeros((4, 3), device=device)
    kw = dict(seed=0, stream=STREAM, step=0)
    for keep in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"dropout_fwd: keep must be in \(0, 1\]"):
            ops.dropout_fwd(x, keep, **kw)
    with pytest.raises(ValueError, match=r"dropout_fwd: step must be an integer in \[0, 2\^32\)"):
        ops.dropout_fwd(x, 0.5, seed=0, stream=STREAM, step=-1)
    with pytest.raises(ValueError, match=r"dropout_fwd: seed must be an integer"):
        ops.dropout_fwd(x, 0.5, seed=1.5, stream=STREAM, step=0)
    with pytest.raises(ValueError, match=r"dropout_fwd: mask has shape \(5,\) but x has shape"):
        ops.dropout_fwd(x, 0.5, mask=convnet.zeros(5, np.uint8, device=device), **kw)
    with pytest.raises(TypeError, match="dropout_fwd: mask must be uint8, got float32"):
        ops.dropout_fwd(x, 0.5, mask=convnet.zeros((4, 3), device=device), **kw)
    with pytest.raises(ValueError, match="dropout_bwd: dx has shape"):
        ops.dropout_bwd(x, convnet.zeros((4, 3), np.uint8, device=device), 0.5,
                        out=convnet.zeros(2, device=device))
