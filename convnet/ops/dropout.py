"""Dropout with masks from the shared Philox RNG: the CPU and CUDA backends (and the emulated one)
draw bit-identical masks for the same (seed, stream, step).

Unit i is kept iff word i of Philox4x32-10 stream (seed, stream, step) is below
floor(keep * 2^32) (keep == 1 keeps all): see csrc/common/rng.h. Use stream = convnet.rng.RNG_DROPOUT | layer
index and step = the training step, so each layer draws a new, reproducible mask every step.

Variants (cuda-convnet's layer types):
  inverted=True  (`dropout`):  train y = x * mask / keep,  test y = x
  inverted=False (`dropout2`, the paper's): train y = x * mask, test y = x * keep
The mask is a uint8 tensor of x's shape (1 = kept); the backward reuses it.
"""
import numpy as np

from ..tensor import empty
from ._dispatch import backend_of, device_of

__all__ = ["dropout_bwd", "dropout_fwd"]


def _check_keep(op, keep):
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"{op}: keep must be in (0, 1], got {keep}")


def _check_uint(op, name, value, bits):
    if not isinstance(value, (int, np.integer)) or not 0 <= value < 2 ** bits:
        raise ValueError(f"{op}: {name} must be an integer in [0, 2^{bits}), got {value!r}")


def dropout_fwd(x, keep, *, seed, stream, step, inverted=True, train=True, out=None, mask=None):
    """(y, mask). At test time (train=False) no mask is drawn: returns (y, None). `out` may be x."""
    _check_keep("dropout_fwd", keep)
    _check_uint("dropout_fwd", "seed", seed, 64)
    _check_uint("dropout_fwd", "stream", stream, 32)
    _check_uint("dropout_fwd", "step", step, 32)
    be = backend_of(x)
    y = out if out is not None else empty(x.shape, np.float32, device_of(x))
    if not train:
        be.axpby(y, x, 1.0 if inverted else float(keep), 0.0)
        return y, None
    if mask is None:
        mask = empty(x.shape, np.uint8, device_of(x))
    be.dropout_fwd(x, y, mask, float(keep), bool(inverted), int(seed), int(stream), int(step))
    return y, mask


def dropout_bwd(dy, mask, keep, inverted=True, out=None, accumulate=False):
    """dx = dy * mask (* 1/keep when inverted); with accumulate, out += that. `out` may be dy."""
    _check_keep("dropout_bwd", keep)
    if accumulate and out is None:
        raise ValueError("dropout_bwd: accumulate=True needs out (the gradient to add to)")
    dx = out if out is not None else empty(dy.shape, np.float32, device_of(dy))
    backend_of(dy).dropout_bwd(dy, mask, dx, float(keep), bool(inverted), bool(accumulate))
    return dx
