"""The built-in generated dataset: deterministic, no download, cheap to make.

Ten classes of shapes, each symmetric under a horizontal flip (so flip augmentation keeps labels):

    0 disc, 1 ring, 2 square, 3 square outline, 4 plus, 5 diagonal cross (X), 6 triangle,
    7 horizontally striped disc, 8 vertically striped disc, 9 checkerboard square

Each image has random foreground and background colours (always at least 80 levels apart in every
channel, so colour alone says nothing about the class), a random size and position, and uniform
pixel noise.  A linear classifier on pixels does poorly; a small convnet learns it quickly.
Image ``i`` of a split is a pure function of (seed, split, i) through the shared Philox RNG
(stream ``RNG_DATASET | split``), so any image can be regenerated anywhere.
Label of image ``i`` is ``i % classes`` (balanced).
"""
from __future__ import annotations

import numpy as np

from .. import rng

CLASS_NAMES = ["disc", "ring", "square", "square outline", "plus", "cross", "triangle",
               "horizontal stripes", "vertical stripes", "checkerboard"]
WORDS_PER_IMAGE = 16


def _params(seed: int, split: int, idx: np.ndarray):
    """Per-image parameters from words 16*i .. 16*i+11 of stream RNG_DATASET | split."""
    w = rng.philox_word(seed, rng.RNG_DATASET | split, 0,
                        idx[:, None].astype(np.uint64) * WORDS_PER_IMAGE + np.arange(12, dtype=np.uint64))
    u = w.astype(np.float64) * (1.0 / 4294967296.0)  # (n, 12) uniforms in [0, 1)
    return w, u


def generate(seed: int, split: int, start: int, stop: int, size: int, classes: int,
             noise: float = 24.0) -> tuple[np.ndarray, np.ndarray]:
    """Images start..stop-1 of a split: uint8 (n, size, size, 3), labels int32 (n,)."""
    idx = np.arange(start, stop, dtype=np.int64)
    n = idx.size
    labels = (idx % classes).astype(np.int32)
    if n == 0:
        return np.zeros((0, size, size, 3), np.uint8), labels
    w, u = _params(seed, split, idx)
    r = size * (0.17 + 0.15 * u[:, 0])                      # half-size of the shape in pixels
    cx = r + u[:, 1] * (size - 1 - 2 * r)                   # centre, shape fully inside
    cy = r + u[:, 2] * (size - 1 - 2 * r)
    bg = np.floor(u[:, 3:6] * 256.0)
    fg = np.mod(bg + 80.0 + np.floor(u[:, 6:9] * 96.0), 256.0)
    period = 0.3 + 0.15 * u[:, 9]                           # stripe/checker period / r

    coord = np.arange(size, dtype=np.float32) + 0.5
    mask = np.zeros((n, size, size), dtype=bool)
    for c in range(classes):
        sel = np.flatnonzero(labels == c)
        if sel.size:
            mask[sel] = _mask(c, coord, cx[sel], cy[sel], r[sel], period[sel])
    img = np.where(mask[..., None], fg[:, None, None, :].astype(np.float32),
                   bg[:, None, None, :].astype(np.float32))
    # uniform noise in [-noise, noise]: bytes from numpy's Philox4x64-10 bit generator keyed by
    # (seed, split << 40 | i), whose raw stream is stable across numpy versions.
    nbytes = size * size * 3
    nraw = (nbytes + 7) // 8
    for k, i in enumerate(idx):
        raw = np.random.Philox(key=np.array([seed & (2**64 - 1), (split << 40) | int(i)], np.uint64)).random_raw(nraw)
        b = raw.view(np.uint8)[:nbytes].reshape(size, size, 3)
        img[k] += b.astype(np.float32) * np.float32(2.0 * noise / 255.0) - np.float32(noise)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels


def _mask(c, coord, cx, cy, r, period):
    """Boolean (n, size, size) mask of shape class c."""
    dx = coord[None, None, :] - cx[:, None, None].astype(np.float32) - 0.5
    dy = coord[None, :, None] - cy[:, None, None].astype(np.float32) - 0.5
    rr = r[:, None, None].astype(np.float32)
    p = period[:, None, None].astype(np.float32) * rr
    adx, ady = np.abs(dx), np.abs(dy)
    cheb = np.maximum(adx, ady)
    d = np.sqrt(dx * dx + dy * dy)
    c = c % 10
    if c == 0:
        m = d <= rr
    elif c == 1:
        m = (d <= rr) & (d >= 0.6 * rr)
    elif c == 2:
        m = cheb <= 0.8 * rr
    elif c == 3:
        m = (cheb <= 0.85 * rr) & (cheb >= 0.55 * rr)
    elif c == 4:
        m = ((adx <= 0.25 * rr) & (ady <= rr)) | ((ady <= 0.25 * rr) & (adx <= rr))
    elif c == 5:
        m = (np.abs(adx - ady) <= 0.28 * rr) & (cheb <= 0.85 * rr)
    elif c == 6:
        m = (dy >= -rr) & (dy <= 0.8 * rr) & (adx <= 0.55 * (dy + rr))
    elif c == 7:
        m = (d <= rr) & (np.floor((dy + rr) / p) % 2 == 0)
    elif c == 8:
        m = (d <= rr) & (np.floor(adx / p + 0.5) % 2 == 0)
    else:
        m = (cheb <= 0.8 * rr) & ((np.floor((adx + 8 * rr) / p) + np.floor((dy + rr) / p)) % 2 == 0)
    return np.broadcast_to(m, (len(cx), len(coord), len(coord)))
