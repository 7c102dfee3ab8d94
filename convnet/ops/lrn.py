"""Response normalisation (csrc/*/lrn.*): cross-map (cuda-convnet's ``cmrnorm``, the paper's LRN)
and same-map (``rnorm``). Activations are (C, H, W, N), image index innermost.

For every element, with the sum of squares over the element's window::

    denoms = min_div + alpha * sum(x**2 over the window)
    y      = x * denoms**(-pow)

Cross-map windows are ``size`` channels ``c - size//2 .. c - size//2 + size - 1`` (an even size
reaches one channel further below c than above), clipped to the channels that exist; same-map
windows are ``size x size`` pixels placed the same way along rows and columns, clipped to the
image. Clipped windows just have fewer terms.

Parameters follow cuda-convnet's layer-params files: ``scale`` is divided by the number of
elements in a full window (``alpha = scale / size`` cross-map, ``scale / size**2`` same-map).
The paper's (k, n, alpha, beta) — alpha NOT divided by n — converts with
``lrn_params_from_paper``: ``lrn_fwd(x, **lrn_params_from_paper(2, 5, 1e-4, 0.75))``.
cuda-convnet2's ImageNet files (scale=0.0001, size=5) therefore mean alpha = 2e-5, a fifth of the
paper's 1e-4. PyTorch's ``local_response_norm(size, alpha, beta, k)`` also divides alpha by
size, with the same window: it equals ``lrn_fwd(size=size, scale=alpha, pow=beta, min_div=k)``.

The forward returns ``denoms`` beside y; the backward needs them (and x, y, dy).
"""
from .. import tensor as _tensor
from ._dispatch import backend_of, device_of

__all__ = ["lrn_bwd", "lrn_fwd", "lrn_params_from_paper", "rnorm_bwd", "rnorm_fwd"]


def lrn_params_from_paper(k, n, alpha, beta):
    """The paper's b = a / (k + alpha * sum a^2)^beta over n maps, as keyword arguments of
    lrn_fwd / lrn_bwd (cuda-convnet's parameterisation: scale = alpha * n)."""
    return {"size": int(n), "scale": float(alpha) * n, "pow": float(beta), "min_div": float(k)}


def _like(x, out):
    return _tensor.empty(x.shape, device=device_of(x)) if out is None else out


def _alpha(divisor, size, scale):
    # size < 1 is reported by the op itself, naming the op.
    return float(scale) / divisor(size) if int(size) >= 1 else float(scale)


def _fwd(name, divisor, x, size, scale, pow, min_div, out, denoms):
    y, d = _like(x, out), _like(x, denoms)
    getattr(backend_of(x), name)(x, y, d, int(size), _alpha(divisor, size, scale), float(pow),
                                 float(min_div))
    return y, d


def _bwd(name, divisor, dy, x, y, denoms, size, scale, pow, out, accumulate):
    dx = _like(x, out)
    getattr(backend_of(x), name)(dy, x, y, denoms, dx, int(size), _alpha(divisor, size, scale),
                                 float(pow), bool(accumulate))
    return dx


def _per_channel(size):
    return int(size)


def _per_pixel(size):
    return int(size) ** 2


def lrn_fwd(x, size, scale, pow, min_div, out=None, denoms=None):
    """Cross-map normalisation. Returns (y, denoms); both (C, H, W, N) like x, written into
    `out` / `denoms` when given. min_div must be > 0, scale >= 0."""
    return _fwd("lrn_fwd", _per_channel, x, size, scale, pow, min_div, out, denoms)


def lrn_bwd(dy, x, y, denoms, size, scale, pow, min_div=None, out=None, accumulate=False):
    """Gradient of lrn_fwd with respect to x, from dy and the forward's x, y, denoms; written
    into `out` (added to it when `accumulate`). min_div is accepted for symmetry and unused
    (denoms carry it)."""
    return _bwd("lrn_bwd", _per_channel, dy, x, y, denoms, size, scale, pow, out, accumulate)


def rnorm_fwd(x, size, scale, pow, min_div, out=None, denoms=None):
    """Same-map normalisation over size x size pixels (alpha = scale / size**2). Returns
    (y, denoms)."""
    return _fwd("rnorm_fwd", _per_pixel, x, size, scale, pow, min_div, out, denoms)


def rnorm_bwd(dy, x, y, denoms, size, scale, pow, min_div=None, out=None, accumulate=False):
    """Gradient of rnorm_fwd with respect to x (see lrn_bwd)."""
    return _bwd("rnorm_bwd", _per_pixel, dy, x, y, denoms, size, scale, pow, out, accumulate)
