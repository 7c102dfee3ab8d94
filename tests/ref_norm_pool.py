"""float64 references for response normalisation and pooling, written for clarity (loops over
windows), in the layout of the ops: (C, H, W, N). `alpha` here is the coefficient of the sum of
squares itself (convnet.ops converts cuda-convnet's scale: scale/size, or scale/size**2)."""
import math

import numpy as np


def window(i, size, n):
    """Window of position i along an axis of length n: [i - size//2, i - size//2 + size),
    clipped."""
    first = i - size // 2
    return max(0, first), min(n, first + size)


def lrn_fwd(x, size, alpha, beta, k):
    x = np.asarray(x, np.float64)
    d = np.empty_like(x)
    for c in range(x.shape[0]):
        lo, hi = window(c, size, x.shape[0])
        d[c] = k + alpha * np.sum(x[lo:hi] ** 2, axis=0)
    return x * d ** -beta, d


def lrn_bwd(dy, x, size, alpha, beta, k):
    """dx_i = dy_i d_i^-beta + sum over channels c whose window holds i of
    dy_c x_c (-beta) d_c^(-beta-1) alpha 2 x_i."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    _, d = lrn_fwd(x, size, alpha, beta, k)
    dx = dy * d ** -beta
    for c in range(x.shape[0]):
        lo, hi = window(c, size, x.shape[0])
        dx[lo:hi] += -2 * alpha * beta * x[lo:hi] * (dy[c] * x[c] * d[c] ** (-beta - 1))
    return dx


def pixel_windows(shape, size):
    """(h, w, rows, cols) for every pixel of a (C, H, W, N) array: the slices of its size x size
    same-map window (rows h - size//2 .. h - size//2 + size - 1, clipped; columns likewise)."""
    _, H, W, _ = shape
    for h in range(H):
        rows = slice(*window(h, size, H))
        for w in range(W):
            yield h, w, rows, slice(*window(w, size, W))


def rnorm_fwd(x, size, alpha, beta, k):
    x = np.asarray(x, np.float64)
    d = np.empty_like(x)
    for h, w, rows, cols in pixel_windows(x.shape, size):
        d[:, h, w] = k + alpha * np.sum(x[:, rows, cols] ** 2, axis=(1, 2))
    return x * d ** -beta, d


def rnorm_bwd(dy, x, size, alpha, beta, k):
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    _, d = rnorm_fwd(x, size, alpha, beta, k)
    dx = dy * d ** -beta
    for h, w, rows, cols in pixel_windows(x.shape, size):
        g = dy[:, h, w] * x[:, h, w] * d[:, h, w] ** (-beta - 1)  # (C, N)
        dx[:, rows, cols] += -2 * alpha * beta * x[:, rows, cols] * g[:, None, None]
    return dx


def pool_out_size(img, size, stride, start=0):
    return 1 + math.ceil((img - start - size) / stride)


def pool_window(o, size, stride, start, n):
    first = start + o * stride
    return max(0, first), min(n, first + size)


def pool_fwd(x, mode, size, stride, start=0, outputs=None):
    x = np.asarray(x, np.float64)
    C, H, W, N = x.shape
    ho = outputs or pool_out_size(H, size, stride, start)
    wo = outputs or pool_out_size(W, size, stride, start)
    y = np.empty((C, ho, wo, N))
    for oy in range(ho):
        ylo, yhi = pool_window(oy, size, stride, start, H)
        for ox in range(wo):
            xlo, xhi = pool_window(ox, size, stride, start, W)
            win = x[:, ylo:yhi, xlo:xhi]
            y[:, oy, ox] = win.max(axis=(1, 2)) if mode == "max" else win.mean(axis=(1, 2))
    return y


def pool_bwd(dy, x, mode, size, stride, start=0):
    """Max: each dy goes to the first pixel (row-major) of its window equal to the window's max.
    Avg: dy / pixels in the clipped window to each of them."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    C, H, W, N = x.shape
    _, ho, wo, _ = dy.shape
    dx = np.zeros_like(x)
    for oy in range(ho):
        ylo, yhi = pool_window(oy, size, stride, start, H)
        for ox in range(wo):
            xlo, xhi = pool_window(ox, size, stride, start, W)
            if mode == "avg":
                count = (yhi - ylo) * (xhi - xlo)
                dx[:, ylo:yhi, xlo:xhi] += dy[:, oy, ox][:, None, None] / count
                continue
            win = x[:, ylo:yhi, xlo:xhi].reshape(C, -1, N)
            first = np.argmax(win, axis=1)  # numpy: first occurrence of the max, row-major
            for c in range(C):
                for n in range(N):
                    q = first[c, n]
                    dx[c, ylo + q // (xhi - xlo), xlo + q % (xhi - xlo), n] += dy[c, oy, ox, n]
    return dx


def _local_mean(x, size):
    """The mean of x over each pixel's size x size window (rnorm's placement, clipped)."""
    mean = np.empty_like(x)
    for h, w, rows, cols in pixel_windows(x.shape, size):
        mean[:, h, w] = x[:, rows, cols].mean(axis=(1, 2))
    return mean


def cnorm_fwd(x, size, alpha, beta, k):
    """Contrast normalisation: m = x - local mean, d = k + alpha * sum of m^2 over the window,
    y = x * d^-beta. Returns (y, m, d)."""
    x = np.asarray(x, np.float64)
    m = x - _local_mean(x, size)
    _, d = rnorm_fwd(m, size, alpha, beta, k)
    return x * d ** -beta, m, d


def cnorm_bwd(dy, x, size, alpha, beta, k):
    """dx = dy d^-beta + g - mean^T(g), g_j = -2 alpha beta m_j * sum over the windows holding
    j of dy y / d: the gradient through d (via m) and through the mean subtracted from m."""
    dy = np.asarray(dy, np.float64)
    y, m, d = cnorm_fwd(x, size, alpha, beta, k)
    g = np.zeros_like(m)
    for h, w, rows, cols in pixel_windows(m.shape, size):
        s = dy[:, h, w] * y[:, h, w] / d[:, h, w]
        g[:, rows, cols] += -2 * alpha * beta * m[:, rows, cols] * s[:, None, None]
    dx = dy * d ** -beta + g
    for h, w, rows, cols in pixel_windows(m.shape, size):
        count = (rows.stop - rows.start) * (cols.stop - cols.start)
        dx[:, rows, cols] -= g[:, h, w][:, None, None] / count
    return dx
