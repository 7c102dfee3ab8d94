"""CIFAR-10/100 python batches (the format cuda-convnet read), through a restricted unpickler.

The unpickler accepts plain data only: dicts, lists, tuples, str, bytes, numbers, and numpy array
reconstruction.  Any other global is refused with a DataError naming the file and the global, so
a malicious batch file cannot run code.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle

import numpy as np

from .errors import DataError

# (module, name) pairs a CIFAR batch may reference: numpy array/dtype/scalar reconstruction under
# numpy 1 and numpy 2 names, and _codecs.encode (how protocol-2 pickles written by Python 3 store
# bytes).  Nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("_codecs", "encode"): ("_codecs",),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, path):
        super().__init__(f, encoding="latin1")
        self._path = path

    def find_class(self, module, name):
        where = _ALLOWED.get((module, name))
        if where is None:
            raise DataError(f"{self._path}: refusing to unpickle global {module}.{name} "
                            "(only plain data and numpy arrays are allowed)")
        for mod in where:
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise DataError(f"{self._path}: cannot resolve {module}.{name} in this numpy")

    def persistent_load(self, pid):
        raise DataError(f"{self._path}: refusing persistent id in pickle")


def load_pickle(path: str):
    """Load a pickle that may contain plain data and numpy arrays only."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as e:  # malformed pickle: any error is a bad file
        raise DataError(f"{path}: not a valid CIFAR python batch ({type(e).__name__}: {e})") from None


def _key(d: dict, *names):
    for n in names:
        for k in (n, n.encode()):
            if k in d:
                return d[k]
    return None


def _decode_str(s):
    return s.decode("latin1") if isinstance(s, bytes) else str(s)


def is_cifar_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "batches.meta")) or (
        os.path.isfile(os.path.join(path, "meta")) and os.path.isfile(os.path.join(path, "train")))


def _read_batch(path: str, label_keys):
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict, got {type(d).__name__}")
    data = _key(d, "data")
    labels = _key(d, *label_keys)
    if data is None or labels is None:
        raise DataError(f"{path}: missing 'data' or '{label_keys[0]}'")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] % 3:
        raise DataError(f"{path}: 'data' must be uint8 (N, 3*H*W), got {data.dtype} {data.shape}")
    side = int(round((data.shape[1] // 3) ** 0.5))
    if 3 * side * side != data.shape[1]:
        raise DataError(f"{path}: 'data' rows of {data.shape[1]} are not 3 square planes")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    # rows are R plane, G plane, B plane (row-major): -> (N, H, W, 3)
    images = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def load_cifar(path: str):
    """Returns dict(classes, train=(images, labels), test=(images, labels)); images uint8 NHWC.

    CIFAR-10: data_batch_1..5 (those present, at least one), test_batch, batches.meta.
    CIFAR-100: train, test, meta (fine labels).
    """
    if not os.path.isdir(path):
        raise DataError(f"CIFAR directory not found: {path}")
    if os.path.isfile(os.path.join(path, "batches.meta")):
        meta = load_pickle(os.path.join(path, "batches.meta"))
        names = _key(meta, "label_names") if isinstance(meta, dict) else None
        train_files = sorted(
            (f for f in os.listdir(path) if f.startswith("data_batch_")),
            key=lambda f: int(f.rsplit("_", 1)[1]) if f.rsplit("_", 1)[1].isdigit() else 1 << 30)
        test_files = ["test_batch"] if os.path.isfile(os.path.join(path, "test_batch")) else []
        label_keys = ("labels",)
    elif os.path.isfile(os.path.join(path, "meta")):
        meta = load_pickle(os.path.join(path, "meta"))
        names = _key(meta, "fine_label_names") if isinstance(meta, dict) else None
        train_files = ["train"] if os.path.isfile(os.path.join(path, "train")) else []
        test_files = ["test"] if os.path.isfile(os.path.join(path, "test")) else []
        label_keys = ("fine_labels", "labels")
    else:
        raise DataError(f"{path}: not a CIFAR directory (no batches.meta or meta)")
    if names is None:
        raise DataError(f"{path}: meta file has no label names")
    if not train_files:
        raise DataError(f"{path}: no training batches (data_batch_N or train)")
    classes = [_decode_str(n) for n in names]

    def read(files):
        if not files:
            return (np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0,), np.int32))
        parts = [_read_batch(os.path.join(path, f), label_keys) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        bad = (labels < 0) | (labels >= len(classes))
        if bad.any():
            raise DataError(f"{path}: label {labels[bad][0]} out of range for {len(classes)} classes")
        return images, labels

    return {"classes": classes, "train": read(train_files), "test": read(test_files)}
