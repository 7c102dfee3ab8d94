"""Contrast normalisation (cuda-convnet's ``cnorm``): subtract the local mean, then normalise by
the local energy of what is left. On x (C, H, W, N), per channel, with size x size windows placed
as the same-map ones of ``rnorm_fwd`` (rows h - size//2 .. h - size//2 + size - 1, clipped)::

    m      = x - avg_pool(x)                       the mean over the clipped window
    denoms = min_div + alpha * sum(m**2 over the window),   alpha = scale / size**2
    y      = x * denoms**(-pow)

Composed from average pooling, rnorm_fwd / rnorm_bwd and the elementwise scale_by_denoms
(csrc/*/cnorm.*). The backward is the exact gradient, through the mean too::

    g  = -2 alpha pow m * sum over the windows holding the pixel of (dy y / denoms)
    dx = dy * denoms**(-pow) + g - avg_pool^T(g)

rnorm_bwd(dy, m, y, denoms) computes dy * denoms**(-pow) + g in one pass."""
from .. import tensor as _tensor
from ._dispatch import backend_of, device_of
from .elementwise import add_, copy_
from .lrn import rnorm_bwd, rnorm_fwd
from .pool import pool_bwd, pool_fwd

__all__ = ["cnorm_bwd", "cnorm_fwd", "scale_by_denoms"]


def scale_by_denoms(x, denoms, pow, out=None):
    """y = x * denoms**(-pow), elementwise (out may be x)."""
    y = _tensor.empty(x.shape, device=device_of(x)) if out is None else out
    backend_of(x).scale_by_denoms(x, denoms, y, float(pow))
    return y


def _buffers(x, *given):
    return [_tensor.empty(x.shape, device=device_of(x)) if b is None else b for b in given]


def _mean_window(size):
    # The averaging window: size x size, stride 1, centred as rnorm's, one output per pixel.
    return dict(size=int(size), stride=1, start=-(int(size) // 2))


def cnorm_fwd(x, size, scale, pow, min_div, out=None, mean_diffs=None, denoms=None):
    """Returns (y, mean_diffs, denoms), all (C, H, W, N) like x; the backward needs all three."""
    y, md, d = _buffers(x, out, mean_diffs, denoms)
    pool_fwd(x, "avg", outputs=tuple(x.shape[1:3]), out=md, **_mean_window(size))
    backend_of(x).axpby(md, x, 1.0, -1.0)                       # m = x - mean
    rnorm_fwd(md, size, scale, pow, min_div, out=y, denoms=d)    # y holds m * d**-pow for now
    scale_by_denoms(x, d, pow, out=y)
    return y, md, d


def cnorm_bwd(dy, x, y, mean_diffs, denoms, size, scale, pow, out=None, accumulate=False,
              scratch=(None, None)):
    """Gradient of cnorm_fwd with respect to x, written into `out` (added to it when
    `accumulate`). `scratch`: two buffers shaped like x (allocated when None)."""
    dx, g, direct = _buffers(x, out, *scratch)
    rnorm_bwd(dy, mean_diffs, y, denoms, size, scale, pow, out=g)  # direct + g
    scale_by_denoms(dy, denoms, pow, out=direct)                   # dy * d**-pow
    add_(g, direct, -1.0)
    if accumulate:
        add_(dx, direct)
    else:
        copy_(dx, direct)
    add_(dx, g)
    pool_bwd(g, x, None, "avg", out=direct, **_mean_window(size))  # avg_pool^T(g)
    add_(dx, direct, -1.0)
    return dx
