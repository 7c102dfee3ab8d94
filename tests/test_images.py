"""Decoding and resampling (convnet/data/images.py, csrc/cpu/resize.cpp): the C++ resampler
against a float64 reference of Pillow's BILINEAR filter and against Pillow itself, every variant,
odd shapes, 1-4 channels, upscaling, fractional boxes; the libjpeg-turbo decode against Pillow's,
DCT reduction, grayscale/CMYK JPEGs, the Pillow fallback, and bad input."""
import numpy as np
import pytest
from PIL import Image

from convnet.data import BadImageError, images
from isa_paths import isa  # noqa: F401  (fixture)

VARIANTS = list(range(1, images.resize_bilinear_variants() + 1))


def ref_taps(lo, hi, in_size, out_size):
    """Per output sample: (first source index, weights), Pillow's triangle filter in float64."""
    scale = (hi - lo) / out_size
    fs = max(scale, 1.0)
    taps = []
    for i in range(out_size):
        center = lo + (i + 0.5) * scale
        x0 = max(int(center - fs + 0.5), 0)
        x1 = min(int(center + fs + 0.5), in_size)
        w = np.array([max(0.0, 1.0 - abs((x - center + 0.5) / fs)) for x in range(x0, x1)])
        taps.append((x0, w / w.sum()))
    return taps


def ref_resize(src, out_h, out_w, box):
    """float64 (out_h, out_w, C), before rounding: rows, then columns, of weighted sums."""
    x0, y0, x1, y1 = box
    a = src.astype(np.float64)
    rows = np.stack([np.tensordot(w, a[f:f + len(w)], 1)
                     for f, w in ref_taps(y0, y1, src.shape[0], out_h)])
    return np.stack([np.tensordot(w, rows[:, f:f + len(w)], ([0], [1]))
                     for f, w in ref_taps(x0, x1, src.shape[1], out_w)], 1)


def test_reference_is_a_weighted_average_that_keeps_constants():
    src = np.full((9, 7, 3), 77, np.uint8)
    np.testing.assert_allclose(ref_resize(src, 4, 5, (0.5, 1.0, 6.5, 8.25)), 77.0)
    # Upscaling by an integer factor reproduces pixel centres exactly.
    rs = np.random.RandomState(0)
    src = rs.randint(0, 256, (3, 4, 1)).astype(np.uint8)
    up = ref_resize(src, 3, 4, (0, 0, 4, 3))
    np.testing.assert_allclose(up, src)


CASES = [  # (src h, w, C), (out h, w), box
    ((375, 500, 3), (224, 224), (91.6, 29.3, 419.8, 357.4)),  # a training window (reduction 1.46)
    ((30, 40, 3), (256, 256), (5, 0, 35, 30)),                # upscaling a small image
    ((7, 9, 1), (5, 3), (0.25, 0.5, 8.75, 6.5)),              # fractional box, 1 channel
    ((13, 11, 2), (4, 6), (0, 0, 11, 13)),                    # 2 channels, non-square
    ((17, 19, 4), (5, 4), (1, 2, 18, 16)),                    # reduction > 2 (gathers), 4 channels
    ((61, 67, 3), (9, 13), (0, 0, 67, 61)),                   # reduction > 2, 3 channels
    ((1, 1, 3), (3, 2), (0, 0, 1, 1)),                        # one pixel
]


@pytest.mark.parametrize("variant", [0] + VARIANTS)
@pytest.mark.parametrize("shape,out_hw,box", CASES)
def test_resize_matches_reference(variant, shape, out_hw, box):
    rs = np.random.RandomState(sum(shape) + variant)
    src = rs.randint(0, 256, shape).astype(np.uint8)
    out = images.resize_bilinear(src, np.empty(out_hw + shape[2:], np.uint8), box, variant)
    ref = ref_resize(src, *out_hw, box)
    assert np.abs(out - ref).max() <= 0.5 + 1e-3  # rounded once, to nearest


@pytest.mark.parametrize("shape,out_hw,box", CASES[:2] + CASES[5:6])
def test_resize_within_one_level_of_pillow(shape, out_hw, box):
    rs = np.random.RandomState(4)
    src = rs.randint(0, 256, shape).astype(np.uint8)
    out = images.resize_bilinear(src, np.empty(out_hw + (3,), np.uint8), box)
    pil = np.asarray(Image.fromarray(src).resize(out_hw[::-1], Image.BILINEAR, box=box))
    assert np.abs(out.astype(int) - pil).max() <= 1  # Pillow rounds after each pass


def test_resize_variants_agree():
    rs = np.random.RandomState(5)
    src = rs.randint(0, 256, (375, 500, 3)).astype(np.uint8)
    outs = [images.resize_bilinear(src, np.empty((224, 224, 3), np.uint8), CASES[0][2], v)
            for v in VARIANTS]
    for o in outs[1:]:  # sums in another order: a tie may round the other way, rarely
        assert np.mean(o != outs[0]) < 1e-3


def test_resize_bad_arguments():
    src = np.zeros((10, 12, 3), np.uint8)
    out = np.empty((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"resize_bilinear: box \(0, 0, 13, 10\) is not inside the 10x12 image"):
        images.resize_bilinear(src, out, (0, 0, 13, 10))
    with pytest.raises(ValueError, match=r"resize_bilinear: box .* is not inside"):
        images.resize_bilinear(src, out, (5, 0, 5, 10))
    with pytest.raises(TypeError, match="resize_bilinear: src must be uint8"):
        images.resize_bilinear(src.astype(np.float32), out, (0, 0, 12, 10))
    with pytest.raises(ValueError, match=r"resize_bilinear: out has shape \(4, 4, 1\), expected \(-?\d*.*3\)"):
        images.resize_bilinear(src, np.empty((4, 4, 1), np.uint8), (0, 0, 12, 10))
    with pytest.raises(ValueError, match="resize_bilinear: channels must be 1..4, got 5"):
        images.resize_bilinear(np.zeros((4, 4, 5), np.uint8), np.empty((2, 2, 5), np.uint8),
                               (0, 0, 4, 4))
    with pytest.raises(ValueError, match="not C-contiguous"):
        images.resize_bilinear(src[:, ::-1], out, (0, 0, 12, 10))
    with pytest.raises(ValueError, match="resize_bilinear: variant 7 is not available"):
        images.resize_bilinear(src, out, (0, 0, 12, 10), 7)


# ------------------------------------------------------------------------------------ decoding

def _photo(h, w, seed=0):
    """Smooth colour gradients with mild noise: what JPEG is made for."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(xx / 23 + c) * np.cos(yy / 17 - c) for c in range(3)], -1) * 90 + 128
    return np.clip(img + rs.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def _jpeg(tmp_path, arr, name="a.jpg", mode=None, **kw):
    p = str(tmp_path / name)
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(p, "JPEG", quality=90, **kw)
    return p


def test_jpeg_decode_equals_pillow(tmp_path):
    for name, arr, kw in [("a.jpg", _photo(75, 101), {}),
                          ("p.jpg", _photo(64, 48, 1), {"progressive": True}),
                          ("s444.jpg", _photo(33, 35, 2), {"subsampling": 0})]:
        p = _jpeg(tmp_path, arr, name, **kw)
        pil = np.asarray(Image.open(p).convert("RGB"))
        ours = images.decode(p)
        assert ours.dtype == np.uint8 and np.array_equal(ours, pil), name


def test_gray_and_cmyk_jpegs(tmp_path):
    arr = _photo(40, 50)
    g = _jpeg(tmp_path, arr[..., 0], "g.jpg")
    out = images.decode(g)
    assert out.shape == (40, 50, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    c = _jpeg(tmp_path, arr, "c.jpg", mode="CMYK")  # decoded by Pillow
    assert np.array_equal(images.decode(c), np.asarray(Image.open(c).convert("RGB")))


def test_dct_reduction_keeps_the_shorter_side(tmp_path):
    p = _jpeg(tmp_path, _photo(600, 1100), "big.jpg")
    assert images.decode(p).shape == (600, 1100, 3)
    assert images.decode(p, 256).shape == (300, 550, 3)   # 1/2: 300 >= 256 > 150
    assert images.decode(p, 70).shape == (75, 138, 3)     # 1/8, sizes rounded up
    assert images.decode(p, 301).shape == (600, 1100, 3)
    full = images.load_resized(p, 256)
    assert full.shape == (256, 256, 3)
    # close to resizing the undecimated image
    ref = images.resize_window(images.decode(p), 256)
    assert np.abs(full.astype(int) - ref).mean() < 2


def test_pillow_decodes_when_simplejpeg_is_missing(tmp_path, monkeypatch):
    p = _jpeg(tmp_path, _photo(45, 61))
    fast = images.load_resized(p, 32)
    monkeypatch.setattr(images, "simplejpeg", None)
    assert np.array_equal(images.load_resized(p, 32), fast)


def test_unreadable_images(tmp_path):
    p = _jpeg(tmp_path, _photo(30, 40))
    data = open(p, "rb").read()
    cases = {"trunc.jpg": data[: len(data) // 2], "junk.jpg": b"\xff\xd8\xff\xe0 not a jpeg",
             "empty.png": b"", "text.png": b"hello"}
    for name, blob in cases.items():
        q = tmp_path / name
        q.write_bytes(blob)
        with pytest.raises(BadImageError, match=name):
            images.load_resized(str(q), 16)
    with pytest.raises(BadImageError, match="missing.jpg"):
        images.decode(str(tmp_path / "missing.jpg"))


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    p = _jpeg(tmp_path, _photo(40, 50))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 900)
    for jpeg_lib in (images.simplejpeg, None):
        monkeypatch.setattr(images, "simplejpeg", jpeg_lib)
        with pytest.raises(BadImageError, match="DecompressionBombError"):
            images.decode(p)


def test_default_variant_on_every_simd_path(isa):
    shape, out_hw, box = CASES[0]
    src = np.random.RandomState(6).randint(0, 256, shape).astype(np.uint8)
    out = images.resize_bilinear(src, np.empty(out_hw + (3,), np.uint8), box)
    assert np.abs(out - ref_resize(src, *out_hw, box)).max() <= 0.5 + 1e-3
