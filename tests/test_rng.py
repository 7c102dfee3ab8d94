import numpy as np
import pytest

from convnet import rng

KAT = [  # Random123 known-answer vectors for philox4x32_10: counter, key, output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answers(ctr, key, expected):
    out = rng.philox4x32_10(*ctr, *key)
    assert tuple(int(x) for x in out) == expected


def test_vectorised_matches_scalar():
    c = np.arange(100, dtype=np.uint64) * 7919
    out = rng.philox4x32_10(c, c + 1, 5, 9, 123, 456)
    for i in (0, 17, 99):
        s = rng.philox4x32_10(int(c[i]), int(c[i]) + 1, 5, 9, 123, 456)
        assert [int(o[i]) for o in out] == [int(x) for x in s]


def test_word_convention():
    # word index of stream (seed, stream, step) = lane index%4 of the block index//4
    seed, stream, step = 0x123456789ABCDEF, rng.RNG_AUGMENT | 3, 7
    idx = np.array([0, 1, 2, 3, 4, 0x500000003], dtype=np.uint64)
    w = rng.philox_word(seed, stream, step, idx)
    for k, i in enumerate(idx.tolist()):
        blk = i >> 2
        ref = rng.philox4x32_10(blk & 0xFFFFFFFF, blk >> 32, step, stream, seed & 0xFFFFFFFF, seed >> 32)
        assert int(w[k]) == int(ref[i & 3])
    # value computed by the C++ header (csrc/common/rng.h) for the same arguments
    assert int(rng.philox_word(seed, 3 << 24, 7, 0x500000003)) == 3825617539
    assert rng.philox_word(1, 2, 3, np.arange(4)).tolist() == [612769223, 1733300647, 1312493418, 651905476]


def test_uniform_and_normal():
    w = np.array([0, 0xFF, 0x100, 0xFFFFFFFF], dtype=np.uint32)
    u = rng.uniform_from_word(w)
    assert u.dtype == np.float32
    assert u.tolist() == [0.0, 0.0, 2.0 ** -24, 1.0 - 2.0 ** -24]
    z = rng.normal(42, rng.RNG_AUGMENT, 0, np.arange(100000))
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    # Box-Muller from words 2i, 2i+1
    w1 = int(rng.philox_word(42, rng.RNG_AUGMENT, 0, 10))
    w2 = int(rng.philox_word(42, rng.RNG_AUGMENT, 0, 11))
    ref = np.sqrt(-2 * np.log((w1 + 1) / 2 ** 32)) * np.cos(2 * np.pi * w2 / 2 ** 32)
    assert z[5] == pytest.approx(ref, rel=1e-12)


def test_randint_and_keep_threshold():
    assert rng.randint_from_word(np.array([0, 0xFFFFFFFF], np.uint32), 33).tolist() == [0, 32]
    assert rng.keep_threshold(1.0) == 0xFFFFFFFF
    assert rng.keep_threshold(0.5) == 1 << 31
