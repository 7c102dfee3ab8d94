"""Reproducible initial weights: Gaussian draws from the shared Philox RNG, made on the host and
copied to the requested device, so a net starts from the same bits on every backend.

Element i is float32(std * convnet.rng.normal(seed, stream, 0, i)) (Box-Muller on Philox words 2i
and 2i+1 in double precision; csrc/common/weight_init.h has the formula). Use
stream = convnet.rng.RNG_INIT | layer index.
"""
import numpy as np

from ..device import module_for
from ..tensor import empty

__all__ = ["gaussian_init"]


def gaussian_init(shape, std, seed, stream, device="cpu"):
    """A float32 tensor of `shape` with N(0, std^2) entries, drawn on the host, moved to `device`."""
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
        raise ValueError(f"gaussian_init: seed must be an integer in [0, 2^64), got {seed!r}")
    if not isinstance(stream, (int, np.integer)) or not 0 <= stream < 2 ** 32:
        raise ValueError(f"gaussian_init: stream must be an integer in [0, 2^32), got {stream!r}")
    w = empty(shape, np.float32, "cpu")
    module_for("cpu").gaussian_fill(w, float(std), int(seed), int(stream))
    return w.to(device)
