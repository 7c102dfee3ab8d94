"""Reproducible initial weights: Gaussian draws from the shared Philox RNG, made on the host and
copied to the requested device, so a net starts from the same bits on every backend.

Element i of (seed, stream) comes from Philox block i // 4 (step 0) by Box-Muller; the exact
formula is in csrc/common/weight_init.h. Use stream = INIT_STREAM | layer index.
"""
import numpy as np

from ..device import module_for
from ..tensor import empty

__all__ = ["INIT_STREAM", "gaussian_init"]

INIT_STREAM = 1 << 24  # kRngInit in csrc/common/rng.h


def gaussian_init(shape, std, seed, stream, device="cpu"):
    """A float32 tensor of `shape` with N(0, std^2) entries, drawn on the host, moved to `device`."""
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
        raise ValueError(f"gaussian_init: seed must be an integer in [0, 2^64), got {seed!r}")
    if not isinstance(stream, (int, np.integer)) or not 0 <= stream < 2 ** 32:
        raise ValueError(f"gaussian_init: stream must be an integer in [0, 2^32), got {stream!r}")
    w = empty(shape, np.float32, "cpu")
    module_for("cpu").gaussian_fill(w, float(std), int(seed), int(stream))
    return w.to(device)
