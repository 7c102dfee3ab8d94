"""Convolution, bias and fully-connected layers (csrc/*/conv*, fc*), in cuda-convnet's layout:

    x  (C, H, W, N)           images, image index innermost
    w  (C/groups, fs, fs, F)  filters; F counts the filters of all groups; group g reads channels
                              [g*C/groups, (g+1)*C/groups) and owns filters [g*F/groups, ...)
    y  (F, Ho, Wo, N)         Ho = conv_out_size(H, fs, padding, stride): cuda-convnet rounds UP
                              (the last window may hang over the far edge, reading zeros)
    FC x (I, N), w (I, O), b (O,), y (O, N) = w^T x + b

Outputs are allocated when `out` is None; with `accumulate=True` the result is added to `out`
(several inputs or consumers summing into one buffer). `variant` selects a numbered kernel
(0 = the default; conv_variant_count says how many the device's backend has). On the CPU,
conv_fwd and conv_bwd_data variant 5 is Winograd F(2x2,3x3) or F(2x2,5x5) (3x3 or 5x5 filters,
stride 1 only), which variant 0 takes for 3x3 layers with >= 64 channels and filters per group
and 5x5 layers with >= 32; CONVNET_WINOGRAD=on|off makes variant 0 take it wherever it applies,
or never; conv_bwd_weights variant 6 is its Winograd weight gradient (the same rule and setting
for variant 0, but for 5x5 on the AVX-512 path only), and variant 5 a direct kernel reading the
images in place (no im2col packing), which variant 0 takes up to 128 filters per group
elsewhere.

The forward ops fuse a layer's bias and ReLU into the GEMM's store (csrc/common/epilogue.h):
``conv_fwd(x, w, b, relu=True)`` = relu(conv(x, w) (+ out when accumulating) + b), in the bits of
conv_fwd, bias_fwd and neuron_fwd(relu) run one after the other, without the two extra passes."""
from ..device import backend
from ..tensor import empty
from ._dispatch import backend_of, device_of

__all__ = ["bias_bwd", "bias_fwd", "conv_bwd_data", "conv_bwd_weights", "conv_fwd",
           "conv_variant_count", "fc_bwd_data", "fc_bwd_weights", "fc_fwd"]


def _need_ndim(op, **tensors):
    # Shapes are read here to size outputs; the backend checks everything else.
    for name, (t, nd, layout) in tensors.items():
        if len(t.shape) != nd:
            raise ValueError(f"{op}: {name} must be {layout}, got shape {tuple(t.shape)}")


def _output(op, out, shape, like, accumulate):
    if out is None:
        if accumulate:
            raise ValueError(f"{op}: accumulate=True needs an existing `out` to add to")
        return empty(shape, device=device_of(like))
    return out


def conv_fwd(x, w, b=None, *, relu=False, padding=0, stride=1, groups=1, out=None,
             accumulate=False, variant=0):
    """y = conv(x, w) [+ b] [then ReLU]: x (C, H, W, N), w (C/groups, fs, fs, F), b (F,) or None
    -> y (F, Ho, Wo, N)."""
    shape = backend_of(x).conv_out_shape("conv_fwd", x.shape, w.shape, int(padding), int(stride),
                                         int(groups))
    y = _output("conv_fwd", out, shape, x, accumulate)
    backend_of(x).conv_fwd(x, w, b, y, int(padding), int(stride), int(groups), bool(accumulate),
                           bool(relu), int(variant))
    return y


def conv_bwd_data(dy, w, x_shape, *, padding=0, stride=1, groups=1, out=None, accumulate=False,
                  variant=0):
    """dx (x_shape = (C, H, W, N)) = gradient of conv_fwd w.r.t. x, given dy (F, Ho, Wo, N)."""
    dx = _output("conv_bwd_data", out, tuple(x_shape), dy, accumulate)
    backend_of(dy).conv_bwd_data(dy, w, dx, int(padding), int(stride), int(groups),
                                 bool(accumulate), int(variant))
    return dx


def conv_bwd_weights(x, dy, filter_size, *, padding=0, stride=1, groups=1, out=None,
                     accumulate=False, variant=0):
    """dw (C/groups, fs, fs, F) = gradient of conv_fwd w.r.t. w, given x and dy (F, Ho, Wo, N)."""
    _need_ndim("conv_bwd_weights", x=(x, 4, "(C, H, W, N)"), dy=(dy, 4, "(F, Ho, Wo, N)"))
    shape = (x.shape[0] // max(int(groups), 1), int(filter_size), int(filter_size), dy.shape[0])
    dw = _output("conv_bwd_weights", out, shape, x, accumulate)
    backend_of(x).conv_bwd_weights(x, dy, dw, int(padding), int(stride), int(groups),
                                   bool(accumulate), int(variant))
    return dw


def bias_fwd(y, b):
    """y (F, ...) += b (F,) for every position and image, in place; returns y."""
    backend_of(y).bias_fwd(y, b)
    return y


def bias_bwd(dy, out=None, accumulate=False):
    """db (F,) = dy (F, ...) summed over everything but the first axis (conv and FC alike)."""
    if not len(dy.shape):
        raise ValueError("bias_bwd: dy must be (F, ...), got a scalar")
    db = _output("bias_bwd", out, (dy.shape[0],), dy, accumulate)
    backend_of(dy).bias_bwd(dy, db, bool(accumulate))
    return db


def fc_fwd(x, w, b=None, out=None, accumulate=False, variant=0, *, relu=False):
    """y (O, N) = w^T x + b [then ReLU]: x (I, N), w (I, O), b (O,) or None."""
    _need_ndim("fc_fwd", x=(x, 2, "(I, N)"), w=(w, 2, "(I, O)"))
    y = _output("fc_fwd", out, (w.shape[1], x.shape[1]), x, accumulate)
    backend_of(x).fc_fwd(x, w, b, y, bool(accumulate), bool(relu), int(variant))
    return y


def fc_bwd_data(dy, w, out=None, accumulate=False, variant=0):
    """dx (I, N) = w dy: dy (O, N), w (I, O)."""
    _need_ndim("fc_bwd_data", dy=(dy, 2, "(O, N)"), w=(w, 2, "(I, O)"))
    dx = _output("fc_bwd_data", out, (w.shape[0], dy.shape[1]), dy, accumulate)
    backend_of(dy).fc_bwd_data(dy, w, dx, bool(accumulate), int(variant))
    return dx


def fc_bwd_weights(x, dy, out=None, accumulate=False, variant=0):
    """dw (I, O) = x dy^T: x (I, N), dy (O, N)."""
    _need_ndim("fc_bwd_weights", x=(x, 2, "(I, N)"), dy=(dy, 2, "(O, N)"))
    dw = _output("fc_bwd_weights", out, (x.shape[0], dy.shape[0]), x, accumulate)
    backend_of(x).fc_bwd_weights(x, dy, dw, bool(accumulate), int(variant))
    return dw


def conv_variant_count(op, device="cpu"):
    """Numbered variants of `op` ('conv_fwd', 'conv_bwd_data', 'conv_bwd_weights', 'fc_fwd',
    'fc_bwd_data', 'fc_bwd_weights') on the backend of `device` (valid: 0 .. count-1)."""
    return backend(device).conv_variant_count(op)
