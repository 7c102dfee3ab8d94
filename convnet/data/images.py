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


def load_resized(path: str, size: int = 256) -> np.ndarray:
    """Decode `path`, resize the shorter side to `size` (bilinear, antialiased) and centre-crop
    size x size.  Returns uint8 (size, size, 3).  Raises BadImageError for any unreadable image."""
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
                # Resize only the central square: same result as resize-then-crop, less work.
                out = im.resize((size, size), Image.BILINEAR, box=(left, top, left + s, top + s))
                arr = np.asarray(out, dtype=np.uint8)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None
    if arr.shape != (size, size, 3):
        raise BadImageError(path, f"decoded to unexpected shape {arr.shape}")
    return arr
