"""Finite-difference checks of the float64 references (tests/ref_*.py): the references are the
ground truth every backend is compared with, so they are themselves checked against numerical
derivatives of their forward functions."""
import numpy as np


def numerical_grad(f, x, dy, eps=1e-6):
    """d(sum(f(x) * dy))/dx by central differences; f maps an array to an array."""
    g = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = np.sum(f(x) * dy)
        flat[i] = old - eps
        fm = np.sum(f(x) * dy)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def assert_grad(f, x, dy, analytic, rtol=1e-5, atol=1e-7, eps=1e-6):
    num = numerical_grad(f, x, dy, eps)
    np.testing.assert_allclose(analytic, num, rtol=rtol, atol=atol)


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """Backend result (float32) vs float64 reference: tolerance tol = atol + rtol*|ref|, scaled by
    the magnitude of the reference so long reductions are judged fairly."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values in the result"
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def tensor_at(array, device, offset):
    """A tensor holding `array` that starts `offset` floats into its buffer: offset 1 makes the
    kernels that move 4 floats at a time (16-byte aligned buffers only) take their scalar path."""
    import convnet
    array = np.ascontiguousarray(array, dtype=np.float32)
    buf = convnet.zeros(array.size + 4, device=device)
    view = buf.narrow(offset, array.size).reshape(*array.shape)
    view.copy_(convnet.tensor(array, device))
    return view
