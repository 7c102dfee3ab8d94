"""Elementwise helpers (csrc/*/elementwise.*): in-place fill, copy, scale, accumulate."""
from ._dispatch import backend_of

__all__ = ["add_", "copy_", "fill_", "scale_"]


def fill_(y, value):
    """y[:] = value."""
    backend_of(y).fill(y, float(value))
    return y


def copy_(y, x):
    """y[:] = x (same device; use Tensor.to / Tensor.copy_ across devices)."""
    backend_of(y).axpby(y, x, 1.0, 0.0)
    return y


def scale_(y, alpha):
    """y *= alpha."""
    backend_of(y).axpby(y, y, float(alpha), 0.0)
    return y


def add_(y, x, alpha=1.0):
    """y += alpha * x: how a layer sums the gradients from several consumers."""
    backend_of(y).axpby(y, x, float(alpha), 1.0)
    return y
