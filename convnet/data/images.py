"""Image decoding with Pillow: any format Pillow reads, resized to `size` on the shorter side and
centre-cropped to size x size (the paper's preprocessing), as uint8 (size, size, 3) RGB."""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from .errors import BadImageError

IMAGE_EXTENSIONS = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
) | {".jpeg", ".jpg", ".png"}


def is_image_file(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def load_resized(path: str, size: int = 256, window=None) -> np.ndarray:
    """Decode `path`, resize the shorter side to `size` (bilinear, antialiased) and centre-crop
    size x size.  Returns uint8 (size, size, 3).  Raises BadImageError for any unreadable image.

    window=(y, x, crop) computes only that crop x crop window of the result (a training crop needs
    77% of a 256 image): the same filter at the same scale and positions, so the same pixels,
    exactly so when the scale (shorter side / size) is exact in binary, as for size 256."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF/palette warnings are not our business
            with Image.open(path) as im:
                im.draft("RGB", (size, size))  # JPEG DCT scaling when the image is large
                if im.mode != "RGB":
                    im = im.convert("RGB")
                w, h = im.size
                if w < 1 or h < 1:
                    raise ValueError("empty image")
                s = min(w, h)
                left, top = (w - s) / 2.0, (h - s) / 2.0
                # Resize only the central square (or the window of it): same result as
                # resize-then-crop, less work.
                if window is None:
                    out_size, box = size, (left, top, left + s, top + s)
                else:
                    y, x, out_size = window
                    k = s / size
                    box = (left + x * k, top + y * k, left + (x + out_size) * k, top + (y + out_size) * k)
                out = im.resize((out_size, out_size), Image.BILINEAR, box=box)
                arr = np.asarray(out, dtype=np.uint8)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None
    if arr.shape != (out_size, out_size, 3):
        raise BadImageError(path, f"decoded to unexpected shape {arr.shape}")
    return arr
