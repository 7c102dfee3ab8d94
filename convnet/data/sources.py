"""Data sources: where images come from, before augmentation.

A source exposes two splits, 0 = train and 1 = test, each a list of stored images of one size
(H, W, 3) uint8, with labels, class ids/names, the mean image of the training split and the RGB
PCA (eigenvalues of the covariance of pixel values scaled to [0, 1], descending, and the unit
eigenvectors as the columns of a 3x3 matrix).

``reader_config()`` returns plain data from which ``make_reader`` rebuilds, in a worker process,
an object with ``load(split, i, key) -> uint8 (H, W, 3)``; ``key(split, i)`` is the image's path
for folder sources (sent with each task) and None otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from . import cifar, images, synthetic
from .errors import BadImageError, DataError

TRAIN, TEST = 0, 1
SPLIT_NAMES = ("train", "test")


def rgb_stats(images_u8: np.ndarray):
    """(sum of pixels (3,), sum of outer products (3, 3), pixel count) in [0, 1] units, float64."""
    x = images_u8.reshape(-1, 3).astype(np.float64) * (1.0 / 255.0)
    return x.sum(0), x.T @ x, x.shape[0]


def pca_from_stats(s1, s2, count):
    """Eigenvalues (descending) and eigenvectors (columns) of the RGB covariance."""
    if count == 0:
        return np.zeros(3, np.float32), np.eye(3, dtype=np.float32)
    m = s1 / count
    cov = s2 / count - np.outer(m, m)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    return np.maximum(vals[order], 0).astype(np.float32), vecs[:, order].astype(np.float32)


class Source:
    kind = "?"
    classes: list          # class ids (folder names, CIFAR names, ...)
    class_names: list      # human-readable names
    size: tuple            # stored (H, W)
    mean: np.ndarray       # float32 (H, W, 3)
    eigvals: np.ndarray    # float32 (3,)
    eigvecs: np.ndarray    # float32 (3, 3), columns
    default_crop: int
    # load_window() computes only the window (decoding sources); else the caller crops load().
    resizes_on_load = False

    def count(self, split: int) -> int:
        return len(self.labels(split))

    def labels(self, split: int) -> np.ndarray:
        raise NotImplementedError

    def key(self, split: int, i: int):
        return None

    def load(self, split: int, i: int, key=None) -> np.ndarray:
        raise NotImplementedError

    def reader_config(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        return (f"{self.kind}: {len(self.classes)} classes, {self.count(TRAIN)} train / "
                f"{self.count(TEST)} test images of {self.size[0]}x{self.size[1]}")


class ArraySource(Source):
    """Images held in memory (CIFAR, generated)."""

    def __init__(self, kind, classes, class_names, train, test, config, default_crop=None):
        self.kind = kind
        self.classes, self.class_names = list(classes), list(class_names)
        self._images = [train[0], test[0]]
        self._labels = [np.ascontiguousarray(train[1], np.int32), np.ascontiguousarray(test[1], np.int32)]
        self.size = tuple(train[0].shape[1:3])
        if train[0].shape[0] == 0:
            raise DataError(f"{kind} source has no training images")
        self.mean = train[0].mean(axis=0, dtype=np.float64).astype(np.float32)
        self.eigvals, self.eigvecs = pca_from_stats(*rgb_stats(train[0]))
        self._config = config
        self.default_crop = default_crop or self.size[0]

    def labels(self, split):
        return self._labels[split]

    def load(self, split, i, key=None):
        return self._images[split][i]

    def reader_config(self):
        return self._config


def open_synthetic(options: dict) -> ArraySource:
    known = {"size", "train", "test", "classes", "seed", "noise"}
    bad = set(options) - known
    if bad:
        raise DataError(f"unknown synthetic option(s) {sorted(bad)}; known: {sorted(known)}")
    try:
        size = int(options.get("size", 32))
        n_train = int(options.get("train", 10000))
        n_test = int(options.get("test", 2000))
        classes = int(options.get("classes", 10))
        seed = int(options.get("seed", 0))
        noise = float(options.get("noise", 24.0))
    except ValueError as e:
        raise DataError(f"bad synthetic option: {e}") from None
    if not (8 <= size <= 1024) or not (2 <= classes <= 10) or n_train < 1 or n_test < 0:
        raise DataError("synthetic options out of range: need 8 <= size <= 1024, "
                        "2 <= classes <= 10, train >= 1, test >= 0")
    from ..memory import gib, host_memory_bytes
    need, have = (n_train + n_test) * size * size * 3, host_memory_bytes()
    if have is not None and need > have:
        raise DataError(f"synthetic train={n_train}, test={n_test} at size={size} would take "
                        f"{gib(need)} of memory; this machine has {gib(have)}")
    train = synthetic.generate(seed, TRAIN, 0, n_train, size, classes, noise)
    test = synthetic.generate(seed, TEST, 0, n_test, size, classes, noise)
    cfg = {"kind": "synthetic", "options": {"size": size, "train": n_train, "test": n_test,
                                            "classes": classes, "seed": seed, "noise": noise}}
    names = synthetic.CLASS_NAMES[:classes]
    return ArraySource("synthetic", names, names, train, test, cfg)


def open_cifar(path: str) -> ArraySource:
    d = cifar.load_cifar(path)
    cfg = {"kind": "cifar", "path": path}
    return ArraySource("cifar", d["classes"], d["classes"], d["train"], d["test"], cfg)


# ---------------------------------------------------------------- image folders (ImageNet layout)

SYNSET_FILES = ("synset_words.txt", "words.txt", "LOC_synset_mapping.txt")
VAL_DIRS = ("val", "validation", "test")
VAL_LABEL_FILES = ("val_labels.txt", "val.txt", "LOC_val_solution.csv")


def _list_images(d):
    try:
        names = sorted(os.listdir(d))
    except OSError as e:
        raise DataError(f"cannot list {d}: {e.strerror or e}") from None
    # Every entry named like an image, readable or not (a dangling link, a directory called
    # x.jpg): the loader reports each unreadable one as skipped, so none vanishes unlisted.
    return [os.path.join(d, n) for n in names if images.is_image_file(n)]


def _read_synsets(root):
    for name in SYNSET_FILES:
        p = os.path.join(root, name)
        if os.path.isfile(p):
            out = {}
            with open(p, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.strip().split(None, 1)
                    if parts:
                        out[parts[0]] = parts[1] if len(parts) > 1 else parts[0]
            return out
    return {}


def _read_val_labels(path, classes):
    """Flat-validation labels: lines 'filename class' (class = folder name or integer index),
    or the Kaggle CSV 'ImageId,PredictionString' whose first token is the class id."""
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("ImageId,"):
                continue
            parts = line.replace(",", " ").split()
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected 'filename class'")
            name, cls = parts[0], parts[1]
            if cls in index:
                label = index[cls]
            elif cls.lstrip("-").isdigit() and 0 <= int(cls) < len(classes):
                label = int(cls)
            else:
                raise DataError(f"{path}:{n}: unknown class {cls!r}")
            out[os.path.splitext(os.path.basename(name))[0]] = label
    return out


def scan_folder(root: str, val_labels: str | None = None):
    """Index an ImageNet-layout folder.  Returns dict(classes, class_names, train, test) where
    train/test are (list of paths, int32 labels).  Layout: ``root/train/<class>/*`` (or
    ``root/<class>/*`` with no test split), validation in ``root/val/<class>/*`` or flat
    ``root/val/*`` with a labels file (``val_labels.txt``: 'filename class' lines)."""
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {root}")
    train_dir = os.path.join(root, "train")
    has_train = os.path.isdir(train_dir)
    base = train_dir if has_train else root
    classes = sorted(e.name for e in os.scandir(base) if e.is_dir()
                     and (has_train or e.name not in VAL_DIRS))
    if not classes:
        raise DataError(f"{base}: no class folders (expected {base}/<class>/<images>)")
    tr_paths, tr_labels = [], []
    for i, c in enumerate(classes):
        files = _list_images(os.path.join(base, c))
        if not files:
            raise DataError(f"empty class folder: {os.path.join(base, c)} has no images")
        tr_paths += files
        tr_labels += [i] * len(files)
    te_paths, te_labels = [], []
    val_dir = next((os.path.join(root, v) for v in VAL_DIRS if os.path.isdir(os.path.join(root, v))), None)
    if has_train and val_dir is not None:
        sub = {e.name for e in os.scandir(val_dir) if e.is_dir()}
        if sub:
            unknown = sorted(sub - set(classes))
            if unknown:
                raise DataError(f"{val_dir}: class folder(s) {unknown[:5]} not in {train_dir}")
            for i, c in enumerate(classes):
                if c in sub:
                    files = _list_images(os.path.join(val_dir, c))
                    te_paths += files
                    te_labels += [i] * len(files)
        else:
            files = _list_images(val_dir)
            if files:
                lab_path = val_labels or next(
                    (os.path.join(root, f) for f in VAL_LABEL_FILES if os.path.isfile(os.path.join(root, f))), None)
                if lab_path is None:
                    raise DataError(f"{val_dir} holds images but no class folders and no labels file "
                                    f"({' or '.join(VAL_LABEL_FILES)} in {root})")
                table = _read_val_labels(lab_path, classes)
                for p in files:
                    stem = os.path.splitext(os.path.basename(p))[0]
                    if stem not in table:
                        raise DataError(f"{lab_path}: no label for {p}")
                    te_paths.append(p)
                    te_labels.append(table[stem])
    synsets = _read_synsets(root)
    return {
        "classes": classes,
        "class_names": [synsets.get(c, c) for c in classes],
        "train": (tr_paths, np.asarray(tr_labels, np.int32)),
        "test": (te_paths, np.asarray(te_labels, np.int32)),
    }


class FolderSource(Source):
    """Raw image files, decoded, resized to 256 on the shorter side and centre-cropped on load.
    The mean image and PCA come from an evenly spaced sample of ``stats_samples`` training images
    (use make_data for statistics over the whole training set)."""

    kind = "folder"

    def __init__(self, root, size=256, stats_samples=256, val_labels=None):
        d = scan_folder(root, val_labels)
        self.root = root
        self.classes, self.class_names = d["classes"], d["class_names"]
        self._paths = [d["train"][0], d["test"][0]]
        self._labels = [d["train"][1], d["test"][1]]
        self.size = (size, size)
        self.default_crop = 224 if size >= 224 else size
        n = len(self._paths[0])
        pick = np.unique(np.linspace(0, n - 1, min(n, stats_samples)).round().astype(np.int64))
        acc = np.zeros((size, size, 3), np.float64)
        s1, s2, cnt, good = np.zeros(3), np.zeros((3, 3)), 0, 0
        for i in pick:
            try:
                img = images.load_resized(self._paths[0][i], size)
            except BadImageError:
                continue
            acc += img
            a, b, c = rgb_stats(img)
            s1, s2, cnt, good = s1 + a, s2 + b, cnt + c, good + 1
        if good == 0:
            raise DataError(f"{root}: none of {len(pick)} sampled training images could be read")
        self.mean = (acc / good).astype(np.float32)
        self.eigvals, self.eigvecs = pca_from_stats(s1, s2, cnt)

    def labels(self, split):
        return self._labels[split]

    def key(self, split, i):
        return self._paths[split][i]

    resizes_on_load = True

    def load(self, split, i, key=None):
        return images.load_resized(key if key is not None else self._paths[split][i], self.size[0])

    def load_window(self, split, i, key, y, x, crop):
        return images.load_resized(key if key is not None else self._paths[split][i], self.size[0],
                                   (y, x, crop))

    def reader_config(self):
        return {"kind": "folder", "size": self.size[0]}


class _PathReader:
    resizes_on_load = True

    def __init__(self, size):
        self.size = size

    def load(self, split, i, key=None):
        return images.load_resized(key, self.size)

    def load_window(self, split, i, key, y, x, crop):
        return images.load_resized(key, self.size, (y, x, crop))


# ---------------------------------------------------------------- packed shards

SHARD_FORMAT = "convnet-shards"
SHARD_VERSION = 1


def read_shard_meta(root):
    p = os.path.join(root, "meta.json")
    try:
        with open(p, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        if os.path.isfile(os.path.join(root, "progress.json")):
            raise DataError(f"{root}: make_data did not finish (progress.json but no meta.json); "
                            "run it again to complete") from None
        raise DataError(f"{root}: no meta.json (not a shard directory)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    if meta.get("format") != SHARD_FORMAT or meta.get("version") != SHARD_VERSION:
        raise DataError(f"{p}: not a {SHARD_FORMAT} v{SHARD_VERSION} file")
    return meta


class ShardSource(Source):
    """Shards written by ``python -m convnet.make_data``, read through np.memmap."""

    kind = "shards"

    def __init__(self, root):
        meta = read_shard_meta(root)
        self.root = root
        s = int(meta["image_size"])
        self.size = (s, s)
        self.default_crop = 224 if s >= 224 else s
        self.classes = list(meta["classes"])
        self.class_names = list(meta.get("class_names", self.classes))
        self._maps, self._labels, self._starts = [], [], []
        for name in SPLIT_NAMES:
            maps, labels = [], []
            for sh in meta["splits"][name]["shards"]:
                n = int(sh["count"])
                fp = os.path.join(root, sh["file"])
                lp = os.path.join(root, sh["labels"])
                try:
                    if os.path.getsize(fp) != n * s * s * 3 or os.path.getsize(lp) != 4 * n:
                        raise DataError(f"{fp}: size does not match meta.json ({n} images)")
                    maps.append(np.memmap(fp, np.uint8, "r", shape=(n, s, s, 3)) if n else
                                np.zeros((0, s, s, 3), np.uint8))
                    labels.append(np.fromfile(lp, dtype="<i4").astype(np.int32))
                except OSError as e:
                    raise DataError(f"cannot open shard {fp}: {e.strerror or e}") from None
            self._maps.append(maps)
            self._labels.append(np.concatenate(labels) if labels else np.zeros(0, np.int32))
            self._starts.append(np.cumsum([0] + [m.shape[0] for m in maps]))
        if self.count(TRAIN) == 0:
            raise DataError(f"{root}: no training images in shards")
        try:
            self.mean = np.load(os.path.join(root, meta["mean"]), allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise DataError(f"{root}: cannot read mean image: {e}") from None
        self.eigvals = np.asarray(meta["pca"]["eigvals"], np.float32)
        self.eigvecs = np.asarray(meta["pca"]["eigvecs"], np.float32)

    def labels(self, split):
        return self._labels[split]

    def load(self, split, i, key=None):
        k = int(np.searchsorted(self._starts[split], i, side="right")) - 1
        return self._maps[split][k][i - self._starts[split][k]]

    def reader_config(self):
        return {"kind": "shards", "path": self.root}


def make_reader(config: dict):
    """Rebuild an image reader in a worker process from ``Source.reader_config()``."""
    kind = config["kind"]
    if kind == "synthetic":
        return open_synthetic(config["options"])
    if kind == "cifar":
        return open_cifar(config["path"])
    if kind == "shards":
        return ShardSource(config["path"])
    if kind == "folder":
        return _PathReader(config["size"])
    raise DataError(f"unknown reader kind {kind!r}")


def _parse_options(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise DataError(f"bad option {part!r}: expected key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def open_spec(spec: str | None, **folder_options) -> Source:
    """``None`` / ``"synthetic[:k=v,...]"`` / ``"cifar:DIR"`` / ``"shards:DIR"`` / ``"folder:DIR"``,
    or a bare directory whose kind is detected (meta.json -> shards, batches.meta or meta ->
    CIFAR, otherwise an image folder)."""
    if spec is None or spec == "synthetic" or spec.startswith("synthetic:"):
        opts = _parse_options(spec.split(":", 1)[1]) if spec and ":" in spec else {}
        return open_synthetic(opts)
    kind, _, rest = spec.partition(":")
    if kind in ("cifar", "shards", "folder") and rest:
        path = os.path.expanduser(rest)
    else:
        kind, path = None, os.path.expanduser(spec)
        if not os.path.exists(path):
            raise DataError(f"data source not found: {spec} (give a directory, or synthetic)")
        if os.path.isfile(os.path.join(path, "meta.json")) or os.path.isfile(os.path.join(path, "progress.json")):
            kind = "shards"
        elif cifar.is_cifar_dir(path):
            kind = "cifar"
        else:
            kind = "folder"
    if kind == "cifar":
        return open_cifar(path)
    if kind == "shards":
        return ShardSource(path)
    return FolderSource(path, **folder_options)


def fingerprint(items) -> str:
    h = hashlib.sha256()
    for x in items:
        h.update(str(x).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()
