"""Counter-based random numbers: a vectorised numpy port of ``csrc/common/rng.h``.

Philox4x32-10 (Salmon et al., SC'11).  A draw is a pure function of
``(seed, stream, step, index)``, so the C++/CUDA backends and this module give bit-identical
integers for the same arguments, whatever the thread or worker order.

Convention (identical to the header): word ``index`` of stream ``(seed, stream, step)`` is output
word ``index % 4`` of::

    philox4x32_10(counter = (block_lo, block_hi, step, stream), key = (seed_lo, seed_hi))

with ``block = index // 4``.  Stream ids: the high byte names the purpose (``RNG_*`` below), the
low bits a layer or worker index.

Floats:

* ``uniform_from_word(w)`` = ``(w >> 8) * 2**-24``: float32 in [0, 1), exact on every backend.
* ``normal(seed, stream, step, index)``: normal number ``i`` is built from words ``2i`` and
  ``2i + 1`` by Box-Muller in float64: ``u1 = (w[2i] + 1) * 2**-32`` (in (0, 1]),
  ``u2 = w[2i+1] * 2**-32``, ``z = sqrt(-2 ln u1) * cos(2 pi u2)``.  Only the cosine branch is
  used, so every normal has its own pair of words (parallel-friendly, no pairing state).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "RNG_INIT", "RNG_DROPOUT", "RNG_AUGMENT", "RNG_SHUFFLE", "RNG_DATASET",
    "philox4x32_10", "philox_word", "uniform_from_word", "uniform", "normal",
    "randint_from_word", "keep_threshold",
]

# Purposes (high byte of the stream id), as in rng.h.
RNG_INIT = 1 << 24      # initial weights
RNG_DROPOUT = 2 << 24   # dropout masks, step = training step
RNG_AUGMENT = 3 << 24   # crops, flips, colour noise, step = epoch
RNG_SHUFFLE = 4 << 24   # data order, step = epoch
RNG_DATASET = 5 << 24   # the generated (synthetic) dataset; Python only so far

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds, elementwise over broadcastable uint32 inputs.

    Returns a tuple of four uint32 arrays (the four output words).
    """
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _MASK32 for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    k0 = int(k0) & 0xFFFFFFFF
    k1 = int(k1) & 0xFFFFFFFF
    for _ in range(10):
        p0 = _M0 * c0          # < 2**64: exact in uint64
        p1 = _M1 * c2
        n0 = (p1 >> _SHIFT32) ^ c1 ^ np.uint64(k0)
        n1 = p1 & _MASK32
        n2 = (p0 >> _SHIFT32) ^ c3 ^ np.uint64(k1)
        n3 = p0 & _MASK32
        c0, c1, c2, c3 = n0, n1, n2, n3
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def philox_word(seed: int, stream: int, step: int, index) -> np.ndarray:
    """Words ``index`` (array of non-negative ints) of stream ``(seed, stream, step)``, as uint32."""
    index = np.asarray(index, dtype=np.uint64)
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    block = index >> np.uint64(2)
    lane = (index & np.uint64(3)).astype(np.intp)
    words = philox4x32_10(block & _MASK32, block >> _SHIFT32, int(step) & 0xFFFFFFFF,
                          int(stream) & 0xFFFFFFFF, seed & 0xFFFFFFFF, seed >> 32)
    out = np.choose(lane, words) if index.ndim else words[int(lane)]
    return np.asarray(out, dtype=np.uint32)


def uniform_from_word(w) -> np.ndarray:
    """Float32 in [0, 1) with 24 random bits, exactly as ``uniform_from_word`` in rng.h."""
    w = np.asarray(w, dtype=np.uint32)
    return (w >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def uniform(seed: int, stream: int, step: int, index) -> np.ndarray:
    """``uniform_from_word(philox_word(...))``."""
    return uniform_from_word(philox_word(seed, stream, step, index))


def randint_from_word(w, n) -> np.ndarray:
    """Integers in [0, n) from words by multiply-shift: ``(w * n) >> 32`` (int64)."""
    w = np.asarray(w, dtype=np.uint64)
    return ((w * np.asarray(n, dtype=np.uint64)) >> _SHIFT32).astype(np.int64)


def normal(seed: int, stream: int, step: int, index) -> np.ndarray:
    """Standard normal numbers ``index`` (float64) by Box-Muller from words 2i and 2i+1."""
    index = np.asarray(index, dtype=np.uint64)
    w1 = philox_word(seed, stream, step, index * np.uint64(2)).astype(np.float64)
    w2 = philox_word(seed, stream, step, index * np.uint64(2) + np.uint64(1)).astype(np.float64)
    u1 = (w1 + 1.0) * (1.0 / 4294967296.0)
    u2 = w2 * (1.0 / 4294967296.0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def keep_threshold(keep: float) -> int:
    """Dropout threshold as in rng.h: a unit is kept when its word is below it."""
    t = float(np.float32(keep)) * 4294967296.0
    return 0xFFFFFFFF if t >= 4294967295.0 else int(t)
