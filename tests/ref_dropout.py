"""Float64 reference for dropout, with the mask drawn by convnet.rng (the numpy port of Philox),
so a backend's mask is checked bit for bit against an independent implementation."""
import numpy as np

from convnet import rng


def dropout_mask(n, keep, seed, stream, step):
    words = rng.philox_word(seed, stream, step, np.arange(n, dtype=np.uint64))
    t = rng.keep_threshold(keep)
    if t == 0xFFFFFFFF:
        return np.ones(n, np.uint8)
    return (words < t).astype(np.uint8)


def dropout_fwd(x, mask, keep, inverted, train):
    x = np.asarray(x, np.float64)
    if not train:
        return x.copy() if inverted else x * keep
    y = x * mask.reshape(x.shape)
    return y / keep if inverted else y


def dropout_bwd(dy, mask, keep, inverted):
    g = np.asarray(dy, np.float64) * mask.reshape(np.shape(dy))
    return g / keep if inverted else g
