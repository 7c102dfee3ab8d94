import numpy as np
import pytest

import convnet
from convnet import ops


@pytest.mark.parametrize("n", [1, 7, 1000, 40001])
def test_fill_copy_scale_add(device, rng, n):
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    tx, ty = convnet.tensor(x, device), convnet.tensor(y, device)
    ops.add_(ty, tx, alpha=0.5)
    np.testing.assert_allclose(ty.numpy(), y + 0.5 * x, rtol=1e-6)
    ops.scale_(ty, -2.0)
    np.testing.assert_allclose(ty.numpy(), -2 * (y + 0.5 * x), rtol=1e-6)
    ops.copy_(ty, tx)
    np.testing.assert_array_equal(ty.numpy(), x)
    ops.fill_(ty, 3.25)
    assert (ty.numpy() == 3.25).all()


@pytest.mark.parametrize("start", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [1, 5, 1027])
def test_vector_and_scalar_paths(device, rng, start, n):
    """Views starting 0-3 floats into a buffer: the float4 path (aligned), the scalar path
    (unaligned) and the n % 4 tail, each leaving the floats around the view untouched."""
    x = rng.standard_normal(n + 4).astype(np.float32)
    y = rng.standard_normal(n + 4).astype(np.float32)
    tx, ty = convnet.tensor(x, device), convnet.tensor(y, device)
    vx, vy = tx.narrow(start, n), ty.narrow(start, n)
    want = y.copy()
    ops.add_(vy, vx, alpha=0.5)
    want[start:start + n] += 0.5 * x[start:start + n]
    np.testing.assert_allclose(ty.numpy(), want, rtol=1e-6)
    ops.copy_(vy, vx)
    want[start:start + n] = x[start:start + n]
    np.testing.assert_array_equal(ty.numpy(), want)
    ops.fill_(vy, -1.5)
    want[start:start + n] = -1.5
    np.testing.assert_array_equal(ty.numpy(), want)


def test_copy_ignores_garbage_in_destination(device):
    y = convnet.empty(33, device=device)  # NaN-poisoned under emulation
    ops.copy_(y, convnet.tensor(np.ones(33), device))
    assert (y.numpy() == 1).all()


def test_bad_arguments(device):
    y = convnet.zeros(10, device=device)
    with pytest.raises(ValueError, match=r"axpby: x has shape \(3,\) but y has shape \(10,\)"):
        ops.add_(y, convnet.zeros(3, device=device))
    with pytest.raises(TypeError, match="axpby: x must be float32, got int32"):
        ops.add_(y, convnet.zeros(10, np.int32, device=device))
    with pytest.raises(TypeError, match="expected a convnet.Tensor"):
        ops.fill_([1, 2], 0)


def test_numpy_arguments_on_cpu():
    y = np.zeros(8, np.float32)
    ops.add_(y, np.ones(8, np.float32))
    assert (y == 1).all()
    with pytest.raises(ValueError, match="axpby: x: numpy array of shape .* not C-contiguous"):
        ops.add_(y, np.ones(16, np.float32)[::2])
    with pytest.raises(TypeError, match="axpby: x: numpy array has dtype float64"):
        ops.add_(y, np.ones(8))
    with pytest.raises(ValueError, match="output y is read-only"):
        ro = np.zeros(8, np.float32)
        ro.flags.writeable = False
        ops.fill_(ro, 1)
