"""Finds the backend module for an op's tensors (numpy arrays count as host tensors)."""
import numpy as np

from ..device import backend
from ..tensor import Tensor


def device_of(t):
    if isinstance(t, Tensor):
        return t.device
    if isinstance(t, np.ndarray):
        return "cpu"
    raise TypeError(f"expected a convnet.Tensor or numpy array, got {type(t).__name__}")


def backend_of(t):
    return backend(device_of(t))
