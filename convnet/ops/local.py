"""Locally-connected layers (csrc/*/local*): convolutions whose filters differ at every output
position (cuda-convnet's ``local`` layers), in cuda-convnet's layout:

    x  (C, H, W, N)                   images, image index innermost
    w  (Ho, Wo, C/groups, fs, fs, F)  the filters of output position (oy, ox), each block laid out
                                      as a conv layer's w (groups as in conv)
    y  (F, Ho, Wo, N)                 Ho = conv_out_size(H, fs, padding, stride), rounding up

Biases, one per filter and position, are added with ``bias_fwd`` on y viewed as (F*Ho*Wo, N).
Outputs are allocated when `out` is None; with `accumulate=True` the result is added to `out`.
`variant` selects a numbered kernel (0 = the default; local_variant_count says how many)."""
from ..device import backend, module_for
from ._dispatch import backend_of
from .conv import _need_ndim, _output

__all__ = ["local_bwd_data", "local_bwd_weights", "local_fwd", "local_variant_count",
           "local_weight_shape"]


def local_weight_shape(x_shape, filters, filter_size, *, padding=0, stride=1, groups=1):
    """w's shape (Ho, Wo, C/groups, fs, fs, filters) for images x_shape (C, H, W, N); `filters`
    counts the filters of all groups."""
    return tuple(module_for("cpu").local_weight_shape(tuple(int(s) for s in x_shape), int(filters),
                                                      int(filter_size), int(padding),
                                                      int(stride), int(groups)))


def local_fwd(x, w, *, padding=0, stride=1, groups=1, out=None, accumulate=False, variant=0):
    """y = local(x, w): x (C, H, W, N), w (Ho, Wo, C/groups, fs, fs, F) -> y (F, Ho, Wo, N)."""
    _need_ndim("local_fwd", x=(x, 4, "(C, H, W, N)"), w=(w, 6, "(Ho, Wo, C/groups, fs, fs, F)"))
    y = _output("local_fwd", out, (w.shape[5], w.shape[0], w.shape[1], x.shape[3]), x,
                accumulate)
    backend_of(x).local_fwd(x, w, y, int(padding), int(stride), int(groups), bool(accumulate),
                            int(variant))
    return y


def local_bwd_data(dy, w, x_shape, *, padding=0, stride=1, groups=1, out=None, accumulate=False,
                   variant=0):
    """dx (x_shape = (C, H, W, N)) = gradient of local_fwd w.r.t. x, given dy (F, Ho, Wo, N)."""
    dx = _output("local_bwd_data", out, tuple(x_shape), dy, accumulate)
    backend_of(dy).local_bwd_data(dy, w, dx, int(padding), int(stride), int(groups),
                                  bool(accumulate), int(variant))
    return dx


def local_bwd_weights(x, dy, filter_size, *, padding=0, stride=1, groups=1, out=None,
                      accumulate=False, variant=0):
    """dw (Ho, Wo, C/groups, fs, fs, F) = gradient of local_fwd w.r.t. w, given x and dy."""
    _need_ndim("local_bwd_weights", x=(x, 4, "(C, H, W, N)"), dy=(dy, 4, "(F, Ho, Wo, N)"))
    shape = (dy.shape[1], dy.shape[2], x.shape[0] // max(int(groups), 1), int(filter_size),
             int(filter_size), dy.shape[0])
    dw = _output("local_bwd_weights", out, shape, x, accumulate)
    backend_of(x).local_bwd_weights(x, dy, dw, int(padding), int(stride), int(groups),
                                    bool(accumulate), int(variant))
    return dw


def local_variant_count(op, device="cpu"):
    """Numbered variants of `op` ('local_fwd', 'local_bwd_data', 'local_bwd_weights') on the
    backend of `device` (valid: 0 .. count-1)."""
    return backend(device).local_variant_count(op)
