"""What inference needs besides the weights, stored in every checkpoint, and a trained net ready to
answer: ``Model.load(checkpoint)``.

A checkpoint's JSON holds the key ``inference`` (written by the trainer through
checkpoint.save, beside the training state) and its arrays the mean image ``inference.mean``:

    image_size    [H, W]: an image file is resized (shorter side, bilinear, antialiased) to H and
                  centre-cropped to H x W, as the data sources store images
    crop          the side of the square the net reads (the test path's centre crop / 10 views)
    mean          the array name of the mean training image, float32 (H, W, 3), 0..255 units;
                  every crop has the centre crop x crop window of it subtracted
    classes       class ids (ImageNet synset ids, folder names, CIFAR names), one per label
    class_names   readable names (synset words where the source has them), one per label
    data          the data source the net was trained on (for the viewer's test images)

Checkpoints written before this key existed still load: the same facts are then taken from the
data source the run names (its ``options.data``), with a note saying what was missing, or the
load fails with a message saying what is missing and how to supply it (``data=``).
"""
import sys

import numpy as np

from . import checkpoint
from .checkpoint import CheckpointError

__all__ = ["MEAN_ARRAY", "InferenceInfo", "record", "from_checkpoint", "Model"]

MEAN_ARRAY = "inference.mean"
VERSION = 1
MISSING_TEXT = "mean image, image and crop sizes or class names"


class InferenceInfo:
    """The preprocessing and the class names of a trained net."""

    def __init__(self, image_size, crop, mean, classes, class_names, data=None):
        self.image_size = tuple(int(s) for s in image_size)
        self.crop = int(crop)
        self.mean = np.ascontiguousarray(mean, np.float32)
        self.classes, self.class_names = list(classes), list(class_names)
        self.data = data
        if self.mean.shape != self.image_size + (3,):
            raise CheckpointError(f"mean image of shape {self.mean.shape}, expected "
                                  f"{self.image_size + (3,)}")
        if len(self.class_names) != len(self.classes):
            raise CheckpointError(f"{len(self.classes)} class ids but {len(self.class_names)} "
                                  "class names")

    @classmethod
    def from_dataset(cls, dataset, data_spec):
        src = dataset.source
        return cls(src.size, dataset.crop, src.mean, src.classes, src.class_names, data_spec)

    def label_name(self, k):
        """'name' of label k (or 'class k' for an output the data never had)."""
        if k < len(self.class_names):
            return str(self.class_names[k])
        return f"class {k}"

    def label_id(self, k):
        return str(self.classes[k]) if k < len(self.classes) else str(k)


def record(info):
    """(meta entry, arrays) to store with a checkpoint."""
    meta = {"version": VERSION, "image_size": list(info.image_size), "crop": info.crop,
            "mean": MEAN_ARRAY, "classes": [str(c) for c in info.classes],
            "class_names": [str(c) for c in info.class_names], "data": info.data}
    return meta, {MEAN_ARRAY: info.mean}


def from_checkpoint(meta, arrays, data=None, say=None):
    """The InferenceInfo of a loaded checkpoint. Without a stored one (an older checkpoint), from
    the data source `data` or else the one the run was trained on, saying so through `say`."""
    path = meta.get("path", "checkpoint")
    stored = meta.get("inference")
    if stored is not None:
        if stored.get("mean") not in arrays:
            raise CheckpointError(f"{path}: the mean image ({stored.get('mean')!r}) is missing "
                                  "from its arrays")
        return InferenceInfo(stored["image_size"], stored["crop"], arrays[stored["mean"]],
                             stored["classes"], stored["class_names"], stored.get("data"))
    spec = data or meta.get("options", {}).get("data")
    if spec is None:
        raise CheckpointError(f"{path}: holds no {MISSING_TEXT} (written by an older convnet), "
                              "and names no data source: give the data it was trained on "
                              "(--data SPEC)")
    from .data import DataError, open_source
    try:
        with open_source(spec, workers=0) as ds:
            info = InferenceInfo.from_dataset(ds, spec)
    except DataError as e:
        raise CheckpointError(f"{path}: holds no {MISSING_TEXT} (written by an older convnet) "
                              f"and its data source {spec!r} cannot be opened ({e}); give the "
                              "data it was trained on (--data SPEC)") from None
    if say is not None:
        say(f"note: {path} was written by an older convnet and holds no {MISSING_TEXT}; "
            f"taken from the data source {spec!r}")
    return info


def _load_values(net, arrays, source):
    """Copies the weights (not the momenta: inference needs none) into the net."""
    from .tensor import from_numpy
    for p in net.params:
        a = arrays.get(p.full_name)
        if a is None:
            raise CheckpointError(f"{source} has no array {p.full_name!r} for layer "
                                  f"{p.layer.name!r}")
        if a.shape != p.shape:
            raise CheckpointError(f"{source}: {p.full_name} has shape {a.shape}, the net needs "
                                  f"{p.shape}")
        p.value.copy_(from_numpy(np.ascontiguousarray(a, np.float32)))


class Model:
    """A trained net with its preprocessing: images -> class probabilities, as the test path.

        m = Model.load("runs/alexnet", device="cpu")
        batch, kept, skipped = m.prepare(paths, views=10)   # (3, crop, crop, 10 * len(kept))
        probs, _ = m.probabilities(batch, views=10)          # (classes, len(kept))
    """

    def __init__(self, config, weights, info, *, device="cpu", batch_images=8, views=10,
                 source="checkpoint", meta=None):
        from .net import Net
        self.config, self.info, self.meta = config, info, meta or {}
        self.batch_images = int(batch_images)
        self.net = Net(config, image_shape=(3, info.crop, info.crop), device=device,
                       batch_size=self.batch_images * views, seed=0, single_device=True)
        _load_values(self.net, weights, source)
        cost = self.net.costs[0]
        self.probs_layer = self.net.fused[cost.name].name
        self.classes = cost.classes

    @classmethod
    def load(cls, path, *, device="cpu", data=None, batch_images=8, views=10, say=None):
        """From a checkpoint (its JSON file or a run directory: the latest checkpoint) or a
        numpy export (convnet.export)."""
        from .config import load_config
        if str(path).endswith(".npz"):
            from .export import read_numpy
            meta, arrays = read_numpy(path)
        else:
            meta, arrays = checkpoint.load(path)
        info = from_checkpoint(meta, arrays, data, say)
        config = load_config(meta["def_path"], meta.get("params_path"),
                             def_text=meta["def_text"], params_text=meta.get("params_text"))
        return cls(config, arrays, info, device=device, batch_images=batch_images, views=views,
                   source=meta["path"], meta=meta)

    # -- preprocessing ------------------------------------------------------------------------
    def assembler(self):
        from .data.augment import Assembler
        return Assembler(self.info.image_size, self.info.crop, self.info.mean,
                         np.zeros(3, np.float32), np.eye(3, dtype=np.float32), flip=False,
                         color_noise=0.0)

    def prepare(self, paths, views=1):
        """Decodes image files as the test path does (resize, centre crop or the 10 views, minus
        the mean): (batch (3, crop, crop, views * kept), kept paths, skipped [(path, reason)]).
        Column v * B + j is view v of kept image j."""
        from .data.sources import make_reader
        reader = make_reader({"kind": "folder", "size": self.info.image_size[0]})
        paths = list(paths)
        batch, _, kept, skipped = self._assemble(reader, 1, np.arange(len(paths)), paths,
                                                 np.zeros(len(paths), np.int32), views)
        return batch, [paths[k] for k in kept], skipped

    def prepare_source(self, source, split, idx, views=1):
        """The same from a data source's stored images (split 0 train, 1 test): (batch, labels
        per column, positions in idx kept, skipped)."""
        idx = np.asarray(idx, np.int64)
        keys = [source.key(split, int(i)) for i in idx]
        return self._assemble(source, split, idx, keys, source.labels(split), views)

    def _assemble(self, reader, split, idx, keys, labels_all, views):
        if views not in (1, 10):
            raise ValueError(f"views must be 1 (centre crop) or 10 (the paper's), got {views}")
        c, m = self.info.crop, max(1, len(idx))
        flat = np.empty(3 * c * c * m * views, np.float32)
        labels = np.empty(m * views, np.int32)
        n, skipped = self.assembler().build(
            reader, split, "test" if views == 1 else "multiview", idx, keys, labels_all, flat,
            labels, on_error="skip")
        bad = {p for p, _ in skipped}
        kept = [k for k, key in enumerate(keys) if key is None or key not in bad]
        return flat[:3 * c * c * n].reshape(3, c, c, n), labels[:n], kept, skipped

    # -- running ------------------------------------------------------------------------------
    def forward(self, batch, layers=()):
        """Runs the net on a prepared batch in chunks the buffers hold; returns
        (probabilities (classes, n), {layer: outputs (..., n)}) per column (view)."""
        n = batch.shape[-1]
        step = self.net.batch_size
        probs, outs = [], {name: [] for name in layers}
        for lo in range(0, n, step):
            chunk = np.ascontiguousarray(batch[..., lo:lo + step])
            k = chunk.shape[-1]
            self.net.forward(chunk, np.zeros(k, np.int32), train=False, step=0)
            probs.append(self.net.output(self.probs_layer).copy())
            for name in layers:
                outs[name].append(self.net.output(name).copy())
        empty = (self.classes, 0)
        return (np.concatenate(probs, axis=-1) if probs else np.zeros(empty, np.float32),
                {name: np.concatenate(v, axis=-1) for name, v in outs.items() if v})

    def probabilities(self, batch, views=1, layers=()):
        """Class probabilities (classes, images), averaged over the views as the trainer's
        multiview test does, and {layer: outputs (..., views * images)} of `layers`."""
        probs, outs = self.forward(batch, layers)
        if views > 1:
            b = probs.shape[-1] // views
            probs = probs.reshape(-1, views, b).mean(axis=1)
        return probs, outs

    def layer_names(self):
        """Layers with an output (what --features accepts)."""
        return self.net.output_names()

    def last_hidden_layer(self):
        """The layer feeding the last weight layer before the softmax (fc7 in AlexNet): the
        paper's figure 4 compares images by its activations."""
        L = self.net.by_name[self.probs_layer]
        while L.inputs and L.TYPE not in ("fc", "conv"):
            L = L.inputs[0]
        prev = L.inputs[0] if L.inputs else L
        return prev.name


def top_k(probs, k):
    """Per column: the k most probable labels, most probable first (ties: lower label first)."""
    k = min(k, probs.shape[0])
    order = np.argsort(-probs, axis=0, kind="stable")
    return order[:k]



def say_stderr(text):
    print(text, file=sys.stderr, flush=True)
