"""float64 references for convolution, bias and fully-connected layers, written for clarity.

Layouts (cuda-convnet's): x (C, H, W, N), w (C/groups, fs, fs, F), y (F, Ho, Wo, N); FC x (I, N),
w (I, O), y (O, N). Output sizes round UP: Ho = 1 + ceil((2*padding + H - fs) / stride), and the
last window may hang over the far edge, where the image reads as zero (like padding)."""
import math

import numpy as np


def out_size(img, fs, padding, stride):
    return 1 + math.ceil((2 * padding + img - fs) / stride)


def _padded(x, fs, padding, stride):
    """x inside a zero frame big enough for every window: padding before, padding plus the
    round-up overhang after."""
    c, h, w, n = x.shape
    ho, wo = out_size(h, fs, padding, stride), out_size(w, fs, padding, stride)
    hp, wp = (ho - 1) * stride + fs, (wo - 1) * stride + fs
    xp = np.zeros((c, max(hp, h + padding), max(wp, w + padding), n))
    xp[:, padding:padding + h, padding:padding + w] = x
    return xp, ho, wo


def _windows(xp, fs, stride, ho, wo):
    """cols[c, ky, kx, oy, ox, n] = xp[c, oy*stride + ky, ox*stride + kx, n]: every window."""
    c, _, _, n = xp.shape
    cols = np.empty((c, fs, fs, ho, wo, n))
    for ky in range(fs):
        for kx in range(fs):
            cols[:, ky, kx] = xp[:, ky:ky + stride * (ho - 1) + 1:stride,
                                 kx:kx + stride * (wo - 1) + 1:stride]
    return cols


def conv_fwd(x, w, padding=0, stride=1, groups=1):
    """y[f, oy, ox, n] = sum over the group's c and the window of w[c, ky, kx, f] * window."""
    cg, fs, _, f = w.shape
    fg = f // groups
    xp, ho, wo = _padded(np.asarray(x, np.float64), fs, padding, stride)
    cols = _windows(xp, fs, stride, ho, wo)                       # (C, fs, fs, Ho, Wo, N)
    y = np.zeros((f, ho, wo, x.shape[3]))
    for g in range(groups):
        wg, cols_g = w[..., g * fg:(g + 1) * fg], cols[g * cg:(g + 1) * cg]
        y[g * fg:(g + 1) * fg] = np.tensordot(wg, cols_g, axes=([0, 1, 2], [0, 1, 2]))
    return y


def conv_bwd_data(dy, w, x_shape, padding=0, stride=1, groups=1):
    """Every input pixel under a window receives w * dy of that window's output."""
    c, h, wd, n = x_shape
    cg, fs, _, f = w.shape
    fg = f // groups
    dxp, ho, wo = _padded(np.zeros(x_shape), fs, padding, stride)
    for g in range(groups):
        dcols = np.tensordot(w[..., g * fg:(g + 1) * fg], dy[g * fg:(g + 1) * fg],
                             axes=([3], [0]))                     # (Cg, fs, fs, Ho, Wo, N)
        _add_windows(dxp[g * cg:(g + 1) * cg], dcols, stride)
    return dxp[:, padding:padding + h, padding:padding + wd]


def _add_windows(dxp, dcols, stride):
    """The inverse of _windows: dcols (C, fs, fs, Ho, Wo, N) added to the pixels they came from."""
    _, fs, _, ho, wo, _ = dcols.shape
    for ky in range(fs):
        for kx in range(fs):
            dxp[:, ky:ky + stride * (ho - 1) + 1:stride,
                kx:kx + stride * (wo - 1) + 1:stride] += dcols[:, ky, kx]


def conv_bwd_weights(x, dy, filter_size, padding=0, stride=1, groups=1):
    """dw[c, ky, kx, f] = sum over outputs and images of window * dy."""
    c, f, fs = x.shape[0], dy.shape[0], filter_size
    cg, fg = c // groups, f // groups
    xp, ho, wo = _padded(np.asarray(x, np.float64), fs, padding, stride)
    cols = _windows(xp, fs, stride, ho, wo)
    dw = np.zeros((cg, fs, fs, f))
    for g in range(groups):
        cols_g, dyg = cols[g * cg:(g + 1) * cg], dy[g * fg:(g + 1) * fg]
        dw[..., g * fg:(g + 1) * fg] = np.tensordot(cols_g, dyg, axes=([3, 4, 5], [1, 2, 3]))
    return dw


def bias_fwd(y, b):
    return y + np.asarray(b, np.float64).reshape((-1,) + (1,) * (y.ndim - 1))


def bias_bwd(dy):
    return np.asarray(dy, np.float64).reshape(dy.shape[0], -1).sum(axis=1)


def fc_fwd(x, w, b=None):
    y = np.asarray(w, np.float64).T @ x
    return y if b is None else y + np.asarray(b, np.float64)[:, None]


def fc_bwd_data(dy, w):
    return np.asarray(w, np.float64) @ dy


def fc_bwd_weights(x, dy):
    return np.asarray(x, np.float64) @ np.asarray(dy, np.float64).T
