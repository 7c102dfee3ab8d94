"""float64 references for locally-connected layers: conv_fwd's windows (ref_conv), each output
position with its own filters. Layouts: x (C, H, W, N), w (Ho, Wo, C/groups, fs, fs, F),
y (F, Ho, Wo, N); output sizes round up as for conv."""
import numpy as np

from ref_conv import _add_windows, _padded, _windows


def local_fwd(x, w, padding=0, stride=1, groups=1):
    """y[f, oy, ox, n] = sum over the group's c and the window of w[oy, ox, c, ky, kx, f] *
    window."""
    ho, wo, cg, fs, _, f = w.shape
    fg = f // groups
    xp, _, _ = _padded(np.asarray(x, np.float64), fs, padding, stride)
    cols = _windows(xp, fs, stride, ho, wo)                       # (C, fs, fs, Ho, Wo, N)
    y = np.zeros((f, ho, wo, x.shape[3]))
    for g in range(groups):
        y[g * fg:(g + 1) * fg] = np.einsum("hwcijf,cijhwn->fhwn", w[..., g * fg:(g + 1) * fg],
                                           cols[g * cg:(g + 1) * cg])
    return y


def local_bwd_data(dy, w, x_shape, padding=0, stride=1, groups=1):
    """Every input pixel under a window receives that position's w * dy."""
    c, h, wd, n = x_shape
    _, _, cg, fs, _, f = w.shape
    fg = f // groups
    dxp, _, _ = _padded(np.zeros(x_shape), fs, padding, stride)
    for g in range(groups):
        dcols = np.einsum("hwcijf,fhwn->cijhwn", w[..., g * fg:(g + 1) * fg],
                          dy[g * fg:(g + 1) * fg])
        _add_windows(dxp[g * cg:(g + 1) * cg], dcols, stride)
    return dxp[:, padding:padding + h, padding:padding + wd]


def local_bwd_weights(x, dy, filter_size, padding=0, stride=1, groups=1):
    """dw[oy, ox, c, ky, kx, f] = sum over the images of window * dy (no sum over positions)."""
    c, f, fs = x.shape[0], dy.shape[0], filter_size
    cg, fg = c // groups, f // groups
    xp, ho, wo = _padded(np.asarray(x, np.float64), fs, padding, stride)
    cols = _windows(xp, fs, stride, ho, wo)
    dw = np.zeros((ho, wo, cg, fs, fs, f))
    for g in range(groups):
        dw[..., g * fg:(g + 1) * fg] = np.einsum("cijhwn,fhwn->hwcijf", cols[g * cg:(g + 1) * cg],
                                                 dy[g * fg:(g + 1) * fg])
    return dw
