"""The paper's preprocessing and augmentation, and the epoch order, from the shared Philox RNG.

Conventions (all draws are pure functions of (seed, epoch, image index), so batches do not depend
on the number of workers or on the batch size):

* Shuffle of epoch e: image i gets the 64-bit key (w[2i] << 32) | w[2i+1] of stream
  (seed, RNG_SHUFFLE, step=e); the order is a stable argsort of the keys.
* Training crop and flip of image i (its index in the training split) in epoch e: words 4i, 4i+1,
  4i+2 of stream (seed, RNG_AUGMENT | 0, step=e); row offset = (w0 * (H - crop + 1)) >> 32,
  column offset likewise from w1, flip when w2 >= 2**31.
* Colour noise: alpha_k = color_noise * normal(seed, RNG_AUGMENT | 1, e, 4i + k), k = 0, 1, 2;
  the RGB shift (0..255 units) added to every pixel is 255 * eigvecs @ (alpha * eigvals), with
  eigvals/eigvecs the PCA of the training set's RGB values in [0, 1] units.
* Mean subtraction: every crop has the centre crop x crop window of the mean image subtracted
  (one mean for every crop position, as cuda-convnet2 did); for centre crops this is exact
  per-pixel mean-image subtraction.
* Test: centre crop.  Multiview: 10 views per image, view v of image j of the batch is column
  v * B + j (B images in the batch); views 0-4 = top-left, top-right, bottom-left, bottom-right,
  centre; views 5-9 = the same, flipped horizontally.
"""
from __future__ import annotations

import numpy as np

from .. import rng
from ..device import module_for
from .errors import BadImageError

MODES = ("train", "test", "multiview")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    i = np.arange(n, dtype=np.uint64)
    hi = rng.philox_word(seed, rng.RNG_SHUFFLE, epoch, 2 * i).astype(np.uint64)
    lo = rng.philox_word(seed, rng.RNG_SHUFFLE, epoch, 2 * i + 1).astype(np.uint64)
    return np.argsort((hi << np.uint64(32)) | lo, kind="stable").astype(np.int64)


def train_params(idx, seed, epoch, size, crop, flip, color_noise, eigvals, eigvecs):
    """Per-image (row offset, column offset, flip, RGB shift (n, 3) float32) for training."""
    idx = np.asarray(idx, dtype=np.uint64)
    base = idx[:, None] * np.uint64(4) + np.arange(3, dtype=np.uint64)
    w = rng.philox_word(seed, rng.RNG_AUGMENT, epoch, base)
    ys = rng.randint_from_word(w[:, 0], size[0] - crop + 1)
    xs = rng.randint_from_word(w[:, 1], size[1] - crop + 1)
    flips = (w[:, 2] >= np.uint32(1 << 31)) if flip else np.zeros(len(idx), bool)
    if color_noise:
        alpha = color_noise * rng.normal(seed, rng.RNG_AUGMENT | 1, epoch, base)
        shift = 255.0 * (alpha * eigvals.astype(np.float64)) @ eigvecs.astype(np.float64).T
    else:
        shift = np.zeros((len(idx), 3))
    return ys, xs, flips, shift.astype(np.float32)


def view_offsets(size, crop):
    """(row, col, flip) of the 10 multiview views, in column-block order."""
    H, W = size
    corners = [(0, 0), (0, W - crop), (H - crop, 0), (H - crop, W - crop),
               ((H - crop) // 2, (W - crop) // 2)]
    return [(y, x, False) for y, x in corners] + [(y, x, True) for y, x in corners]


def assemble_batch(images, index, offsets, flips, shift, mean, out, variant=0):
    """The C++ batch assembly (csrc/common/augment.h): column j of `out` (3, crop, crop, N) float32
    is images[index[j]]'s crop x crop window at offsets[j] = (row, col), mirrored when flips[j],
    minus `mean` (3, crop, crop), plus shift[j] (N, 3) when shift is not None; evaluated as
    (float(pixel) - mean) + shift in float32, exactly as the numpy path.  `images` is a list of
    uint8 (H, W, 3) arrays or one (M, H, W, 3) array.  variant 0 picks the best the CPU runs."""
    module_for("cpu").assemble_batch(
        images, np.ascontiguousarray(index, np.int32), np.ascontiguousarray(offsets, np.int32),
        np.ascontiguousarray(flips, np.bool_).view(np.uint8),
        None if shift is None else np.ascontiguousarray(shift, np.float32), mean, out,
        int(variant))


def assemble_batch_variants() -> int:
    """assemble_batch variants this CPU runs: 1 portable, 2-3 AVX2, 4-5 AVX-512 (cached, streaming)."""
    return module_for("cpu").assemble_batch_variants()


def assemble_batch_numpy(images, index, offsets, flips, shift, mean, out, scratch=None):
    """The same as assemble_batch in numpy (the pipeline's first implementation; the benchmark's
    peer).  `scratch` is a pair of uint8 buffers of at least N*crop*crop*3 bytes, or None."""
    c, n = mean.shape[1], len(index)
    if scratch is None or scratch[0].size < n * c * c * 3:
        scratch = (np.empty(n * c * c * 3, np.uint8), np.empty(n * c * c * 3, np.uint8))
    u = scratch[0][:n * c * c * 3].reshape(n, c, c, 3)
    for j in range(n):
        y, x = offsets[j]
        win = images[index[j]][y:y + c, x:x + c]
        u[j] = win[:, ::-1] if flips[j] else win
    # (n, c*c*3) -> (c*c*3, n) in blocks of 32 columns: cheap uint8 transposes
    mid = scratch[1][:n * c * c * 3].reshape(c * c * 3, n)
    u2 = u.reshape(n, c * c * 3)
    for g in range(0, n, 32):
        mid[:, g:g + 32] = u2[g:g + 32].T
    np.subtract(mid.reshape(c, c, 3, n).transpose(2, 0, 1, 3), mean[..., None], out=out)
    if shift is not None and n:
        for ch in range(3):
            out[ch] += shift[:, ch]


IMPLS = ("kernel", "numpy")


class Assembler:
    """Builds one batch in (3, crop, crop, N) float32 from stored uint8 images.

    The result is written straight into the caller's buffer (a shared-memory slot in worker
    processes).  impl="kernel" (default) assembles with the C++ kernel (`variant` as in
    assemble_batch), impl="numpy" with the numpy path; both give identical bits."""

    def __init__(self, size, crop, mean, eigvals, eigvecs, flip=True, color_noise=0.1,
                 impl="kernel", variant=0):
        self.size, self.crop = tuple(size), int(crop)
        if not (1 <= crop <= min(size)):
            raise ValueError(f"crop {crop} does not fit images of {size[0]}x{size[1]}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        y0, x0 = (size[0] - crop) // 2, (size[1] - crop) // 2
        # (3, crop, crop): the centre crop of the mean image, channel-major
        self.mean_crop = np.ascontiguousarray(
            mean[y0:y0 + crop, x0:x0 + crop].transpose(2, 0, 1), dtype=np.float32)
        self.eigvals = np.asarray(eigvals, np.float32)
        self.eigvecs = np.asarray(eigvecs, np.float32)
        self.flip, self.color_noise = bool(flip), float(color_noise)
        self.impl, self.variant = impl, int(variant)
        self._scratch = None

    def columns(self, mode, idx, seed=0, epoch=0):
        """Column plan for images `idx`: row offsets, column offsets, flips, each (len(idx), V)
        for V views per image, and the RGB shifts (len(idx), 3) float32 or None."""
        m = len(idx)
        if mode == "train":
            ys, xs, fl, sh = train_params(idx, seed, epoch, self.size, self.crop, self.flip,
                                          self.color_noise, self.eigvals, self.eigvecs)
            return ys[:, None], xs[:, None], fl[:, None], (sh if self.color_noise else None)
        if mode == "test":
            y0, x0 = (self.size[0] - self.crop) // 2, (self.size[1] - self.crop) // 2
            return np.full((m, 1), y0), np.full((m, 1), x0), np.zeros((m, 1), bool), None
        if mode == "multiview":
            vy, vx, vf = (np.array(a) for a in zip(*view_offsets(self.size, self.crop)))
            return (np.broadcast_to(vy, (m, 10)), np.broadcast_to(vx, (m, 10)),
                    np.broadcast_to(vf, (m, 10)), None)
        raise ValueError(f"unknown mode {mode!r}")

    def build(self, reader, split, mode, idx, keys, labels_all, out_flat, labels_out,
              seed=0, epoch=0, on_error="skip"):
        """Load images idx (keys: paths or None), augment, and write the batch into `out_flat`
        (a float32 buffer of at least 3*crop*crop*N elements) viewed as (3, crop, crop, N), and
        labels into `labels_out`.  Returns (N, skipped list of (path, reason))."""
        ys, xs, fl, shifts = self.columns(mode, idx, seed, epoch)
        c = self.crop
        # A decoding reader resizes only the window a single-view column uses, which then sits at
        # offset (0, 0) of what it returns.
        windows = ys.shape[1] == 1 and getattr(reader, "resizes_on_load", False)
        loaded, skipped, keep = [], [], []
        for k, i in enumerate(idx):
            key = keys[k] if keys is not None else None
            try:
                img = (reader.load_window(split, int(i), key, int(ys[k, 0]), int(xs[k, 0]), c)
                       if windows else reader.load(split, int(i), key))
                loaded.append(np.ascontiguousarray(img))
                keep.append(k)
            except BadImageError as e:
                if on_error == "raise":
                    raise
                skipped.append((e.path, e.reason))
        B, V = len(keep), ys.shape[1]
        n = B * V
        if n == 0:
            return 0, skipped  # nothing readable: the iterator refills the batch
        # column v*B + b is view v of kept image b
        index = np.tile(np.arange(B, dtype=np.int32), V)
        offsets = np.stack([ys[keep].T.ravel(), xs[keep].T.ravel()], axis=1).astype(np.int32)
        if windows:
            offsets[:] = 0
        flips = fl[keep].T.ravel()
        shift = shifts[keep] if shifts is not None and B else None
        out = out_flat[:3 * c * c * n].reshape(3, c, c, n)
        if self.impl == "kernel":
            assemble_batch(loaded, index, offsets, flips, shift, self.mean_crop, out, self.variant)
        else:
            if self._scratch is None or self._scratch[0].size < n * c * c * 3:
                self._scratch = (np.empty(n * c * c * 3, np.uint8), np.empty(n * c * c * 3, np.uint8))
            assemble_batch_numpy(loaded, index, offsets, flips, shift, self.mean_crop, out, self._scratch)
        lab = labels_all[np.asarray(idx, np.int64)[keep]] if B else np.zeros(0, np.int32)
        labels_out[:n] = np.tile(lab, V)
        return n, skipped


def reference_column(img, y, x, f, crop, mean, shift=None):
    """Simple per-image reference (tests): crop, flip, minus the centre crop of the mean, plus
    shift; returns (3, crop, crop) float32."""
    H, W = mean.shape[:2]
    y0, x0 = (H - crop) // 2, (W - crop) // 2
    win = img[y:y + crop, x:x + crop].astype(np.float32)
    if f:
        win = win[:, ::-1]
    win = win - mean[y0:y0 + crop, x0:x0 + crop]
    if shift is not None:
        win = win + shift
    return np.ascontiguousarray(win.transpose(2, 0, 1))
