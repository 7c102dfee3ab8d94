"""Pooling (csrc/*/pool.*): cuda-convnet's ``pool`` layer, max or average over size x size
windows every `stride` pixels, the first at `start` (0 or negative). x is (C, H, W, N), y is
(C, Ho, Wo, N).

Output size: ``pool_out_size(H, size, stride, start)`` = 1 + ceil((H - start - size) / stride)
(cuda-convnet rounds up: 55 -> 27 with the paper's overlapping 3/2 pooling), or cuda-convnet's
explicit ``outputsX`` via `outputs`. Windows are clipped to the image; each must hold a pixel.
- max: backward routes dy to the first pixel of the window (rows top to bottom, columns left to
  right) whose value equals the max, so ties are deterministic and each dy is passed once
  (cuda-convnet passes it to every tied pixel). y must be pool_fwd's output for the same x.
- avg: divides by the number of pixels inside the clipped window (cuda-convnet's rule), so edge
  outputs average only real pixels.

Winners (max, windows up to MAX_WINNER_SIZE square): the forward can record each window's winner
(one uint8 per element of y, see csrc/common/pool.h), and the backward then routes dy from them
without reading x or y — the same bits as the (x, y) backward, with a fraction of the memory
traffic (x is the largest activation of a net; the winners are a quarter of y).
"""
import numpy as _np

from .. import tensor as _tensor
from ._dispatch import backend_of, device_of
from .shape import pool_out_size

__all__ = ["MAX_WINNER_SIZE", "pool_bwd", "pool_fwd", "pool_output_shape", "pool_winners"]

# The largest window whose winners fit a byte (csrc/common/pool.h kPoolMaxWinnerSize).
MAX_WINNER_SIZE = 11


def pool_output_shape(x_shape, size, stride, start=0, outputs=None):
    """(C, Ho, Wo, N) of pooling an x of shape (C, H, W, N). `outputs`: an int (cuda-convnet's
    outputsX, both axes) or (Ho, Wo) to override the computed sizes."""
    c, h, w, n = x_shape
    if outputs is None:
        ho, wo = pool_out_size(h, size, stride, start), pool_out_size(w, size, stride, start)
    elif isinstance(outputs, int):
        ho = wo = outputs
    else:
        ho, wo = outputs
    return (c, int(ho), int(wo), n)


def _check_mode(op, mode):
    if mode not in ("max", "avg"):
        raise ValueError(f"{op}: mode must be 'max' or 'avg', got {mode!r}")


def pool_winners(y):
    """A uint8 buffer for the winners of a max pool's output y (pool_fwd's `winners`)."""
    return _tensor.empty(tuple(y.shape), _np.uint8, device=device_of(y))


def pool_fwd(x, mode, size, stride, start=0, outputs=None, out=None, winners=None):
    """Pools x (C, H, W, N); returns y (C, Ho, Wo, N), written into `out` when given.
    `winners` (max only): a uint8 tensor of y's shape (pool_winners) that records each
    window's winner for pool_bwd."""
    _check_mode("pool_fwd", mode)
    if len(getattr(x, "shape", ())) != 4:
        raise ValueError(f"pool_fwd: x must have 4 dimensions (C, H, W, N), got shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    shape = pool_output_shape(x.shape, size, stride, start, outputs)
    y = _tensor.empty(shape, device=device_of(x)) if out is None else out
    backend_of(x).pool_fwd(x, y, int(size), int(stride), int(start), shape[1], shape[2], mode,
                           winners)
    return y


def pool_bwd(dy, x, y, mode, size, stride, start=0, out=None, accumulate=False, relu_bias=None,
             winners=None):
    """Gradient of pool_fwd with respect to x: dx (C, H, W, N), written into `out` (added to it
    when `accumulate`). The output size is dy's. Average pooling ignores y (None is fine).

    winners (max only): what pool_fwd recorded for this x; dy is routed from them and x and y
    are not read (both may be None; dx's shape is then `out`'s).

    relu_bias=db (C,): x is a layer's output after its fused bias + ReLU and dx that layer's whole
    gradient: dx is then masked by x > 0 and summed per channel into db, relu_bias_bwd(dx, x, db)
    fused in (the same bits, one pass over dx fewer on the CPU). Not with `accumulate`."""
    _check_mode("pool_bwd", mode)
    if winners is not None and mode != "max":
        raise ValueError("pool_bwd: winners are for max pooling only")
    if y is None and winners is None:
        if mode == "max":
            raise ValueError("pool_bwd: max pooling needs y (pool_fwd's output) or its winners")
        y = dy
    if out is None and x is None:
        raise ValueError("pool_bwd: give x or out (dx's shape)")
    dx = _tensor.empty(x.shape, device=device_of(x)) if out is None else out
    if relu_bias is not None and accumulate:
        raise ValueError("pool_bwd: relu_bias needs dx to be the layer's whole gradient, "
                         "not accumulate=True")
    geo = (int(size), int(stride), int(start))
    if winners is not None:
        if relu_bias is None:
            backend_of(dy).pool_bwd_winners(dy, winners, dx, *geo, bool(accumulate))
        else:
            backend_of(dy).pool_bwd_winners_relu_bias(dy, winners, dx, relu_bias, *geo)
    elif relu_bias is None:
        backend_of(x).pool_bwd(dy, x, y, dx, *geo, mode, bool(accumulate))
    else:
        backend_of(x).pool_bwd_relu_bias(dy, x, y, dx, relu_bias, *geo, mode)
    return dx
