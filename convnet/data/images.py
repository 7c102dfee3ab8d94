"""Image decoding and resampling: a file -> uint8 (size, size, 3) RGB, its shorter side resized to
`size` and centre-cropped (the paper's preprocessing), or just a window of that.

JPEGs are decoded by libjpeg-turbo (through simplejpeg: the same pixels as Pillow's decode, in 70%
of its time, measured), reduced by a power of two in the DCT when the image is at least twice the target
size; anything else (and CMYK JPEGs) by Pillow, likewise reduced (`draft`). The resize is the C++
resampler (csrc/cpu/resize.cpp): Pillow's BILINEAR filter, antialiased when shrinking."""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from ..device import module_for
from .errors import BadImageError

try:
    import simplejpeg
except ImportError:  # a platform without its wheel: Pillow decodes JPEGs too
    simplejpeg = None

IMAGE_EXTENSIONS = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
) | {".jpeg", ".jpg", ".png"}

# Colour models libjpeg-turbo cannot turn into RGB.
_PILLOW_JPEG_COLORSPACES = ("CMYK", "YCCK")


def is_image_file(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def _jpeg_scale(h: int, w: int, min_side: int) -> int:
    """The largest DCT reduction 1, 2, 4 or 8 that keeps the shorter side >= min_side (libjpeg's
    scaled sizes round up)."""
    f = 8 if min_side > 0 else 1
    while f > 1 and -(-min(h, w) // f) < min_side:
        f //= 2
    return f


def _decode_jpeg(data: bytes, min_side: int):
    """RGB array, or None when Pillow should decode it."""
    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    if colorspace in _PILLOW_JPEG_COLORSPACES:
        return None
    if Image.MAX_IMAGE_PIXELS and h * w > 2 * Image.MAX_IMAGE_PIXELS:  # Pillow's own limit
        raise Image.DecompressionBombError(f"{w}x{h} pixels: a decompression bomb?")
    f = _jpeg_scale(h, w, min_side)
    # min_height/min_width select the reduction: the smallest of libjpeg-turbo's scalings that
    # keeps both, which is exactly 1/f.
    return simplejpeg.decode_jpeg(data, "RGB", min_height=-(-h // f), min_width=-(-w // f))


def _decode_pillow(path: str, min_side: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EXIF/palette warnings are not our business
        with Image.open(path) as im:
            if min_side > 0:
                im.draft("RGB", (min_side, min_side))  # JPEG DCT scaling when the image is large
            if im.mode.startswith("I"):
                return _grey16_to_rgb8(np.asarray(im))
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)


def _grey16_to_rgb8(grey: np.ndarray) -> np.ndarray:
    """16-bit greyscale (Pillow's modes I;16, I;16B, and I, which 16-bit PNGs and TIFFs open as)
    -> 8-bit RGB, the range 0..65535 scaled onto 0..255 (v / 257, rounded). Pillow's own
    convert("RGB") clips at 255 instead, which turns such an image almost white. (Colour images
    of 16 bits per channel Pillow opens as 8-bit RGB itself.)"""
    g8 = np.clip(np.rint(grey.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(g8[:, :, None], 3, axis=2)


def decode(path: str, min_side: int = 0) -> np.ndarray:
    """The image at `path` as uint8 (H, W, 3) RGB, possibly reduced in the decoder while its
    shorter side stays >= min_side.  Raises BadImageError for any unreadable image."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            arr = None
            if simplejpeg is not None and head == b"\xff\xd8":
                f.seek(0)
                arr = _decode_jpeg(f.read(), min_side)
        if arr is None:
            arr = _decode_pillow(path, min_side)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BadImageError(path, f"decoded to unexpected shape {arr.shape}")
    return arr


def resize_bilinear(src: np.ndarray, out: np.ndarray, box, variant: int = 0) -> np.ndarray:
    """Resample the rectangle box = (x0, y0, x1, y1) (pixel edges) of uint8 src (H, W, C) onto all
    of uint8 out (h, w, C), C <= 4, with Pillow's BILINEAR filter (a triangle widened by the
    reduction factor: antialiased), in float, rounded once.  variant 0 picks the fastest; 1 SSE,
    2 AVX-512 (csrc/cpu/resize.cpp).  Returns out."""
    module_for("cpu").resize_bilinear(src, out, tuple(float(b) for b in box), int(variant))
    return out


def resize_bilinear_variants() -> int:
    """resize_bilinear variants this CPU runs: 1..this number."""
    return module_for("cpu").resize_bilinear_variants()


def resize_window(img: np.ndarray, size: int, window=None) -> np.ndarray:
    """img (H, W, 3) uint8 -> its central square resized to size x size, or (window=(y, x, crop))
    only that crop x crop window of it: the same filter at the same positions, so the same pixels
    as cropping the full result."""
    h, w = img.shape[:2]
    s = min(h, w)
    left, top = (w - s) / 2.0, (h - s) / 2.0
    if window is None:
        out_size, box = size, (left, top, left + s, top + s)
    else:
        y, x, out_size = window
        k = s / size
        box = (left + x * k, top + y * k, min(left + (x + out_size) * k, w),
               min(top + (y + out_size) * k, h))
    return resize_bilinear(img, np.empty((out_size, out_size, 3), np.uint8), box)


def load_resized(path: str, size: int = 256, window=None) -> np.ndarray:
    """Decode `path`, resize the shorter side to `size` and centre-crop size x size: uint8
    (size, size, 3); window=(y, x, crop) computes only that crop x crop window of the result (a
    training crop needs 77% of a 256 image).  Raises BadImageError for any unreadable image."""
    return resize_window(decode(path, size), size, window)
