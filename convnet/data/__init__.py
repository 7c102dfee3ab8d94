"""Data pipeline: sources, the paper's preprocessing and augmentation, parallel loading.

    ds = open_source(spec=None, *, crop=None, flip=True, color_noise=0.1, workers=None,
                     prefetch=4, on_error="skip", start_method="spawn")

``spec`` selects the source:

* ``None`` or ``"synthetic[:size=32,train=10000,test=2000,classes=10,seed=0,noise=24]"`` -- the
  built-in generated dataset (10 flip-symmetric shape classes, random colours, position, size
  and noise; deterministic, no download).
* ``"cifar:DIR"`` -- CIFAR-10 (data_batch_N, test_batch, batches.meta) or CIFAR-100 (train, test,
  meta; fine labels) python batches, read through a restricted unpickler.
* ``"shards:DIR"`` -- shards written by ``python -m convnet.make_data SRC DIR``.
* ``"folder:DIR"`` -- an ImageNet-layout folder (``train/<class>/*``; ``val/<class>/*`` or flat
  ``val/*`` with ``val_labels.txt``), any format Pillow reads, class names from
  ``synset_words.txt`` when present; images are resized to 256 on the shorter side and
  centre-cropped on the fly; the mean image and PCA come from a sample of 256 training images.
* a bare ``DIR`` -- detected: meta.json -> shards, batches.meta/meta -> CIFAR, else folder.

``crop`` defaults to 224 for 256x256 sources and to the full image size for small sources
(CIFAR, synthetic).  ``workers=None`` means 0 (in-process) for in-memory sources and
``max(1, min(4, cpus // 2))`` for folders and shards.  Workers are started with ``start_method``
('spawn' by default: safe with a multithreaded trainer; 'forkserver' also works).
``on_error="raise"`` fails fast on the first unreadable image instead of skipping it.

The returned ``Dataset`` has ``num_classes``, ``class_names``, ``class_ids``, ``image_shape``
(3, crop, crop), ``num_train``, ``num_test``, ``mean`` (3, crop, crop) and:

* ``train_batches(epoch, batch_size, seed=0, drop_last=True)`` -- epoch order from a Philox
  shuffle of (seed, epoch); random crop + horizontal flip + PCA colour noise per image, drawn from
  (seed, epoch, image index), so output is identical for any number of workers.  The final
  partial batch is dropped by default (cuda-convnet used full batches).
* ``test_batches(batch_size, multiview=False, drop_last=False)`` -- in order, centre crops; the
  final batch may be shorter.  With ``multiview=True`` a batch of B images has 10*B columns:
  column ``v*B + j`` is view v of image j (views 0-4 top-left, top-right, bottom-left,
  bottom-right, centre; 5-9 the same flipped), labels tiled the same way; average the softmax
  with ``probs.reshape(K, 10, B).mean(axis=1)``.

Both return a ``BatchIterator`` yielding ``(images, labels)``: images float32 C-contiguous
(3, crop, crop, N), mean-subtracted, in 0..255 units; labels int32 (N,).  The arrays are views of
a reused (shared-memory) buffer, valid until the next batch is requested.  A batch that met an
unreadable image is shorter by that image; one whose images are all unreadable is refilled from
the images that follow it in the pass (never empty; DataError if no image of the pass is
readable); ``it.skipped`` lists (path, reason) of every unreadable file, each once, dangling
links and directories named like images included, and ``it.summary()`` reports the pass.
16-bit greyscale images are scaled to 8 bits (v / 257), not clipped.  A dead worker raises ``WorkerError`` within a second.
``ds.close()`` (or ``with open_source(...) as ds``) stops the workers; shared memory is
released when an iterator is exhausted, closed or garbage collected.

Augmentation conventions (RNG streams, mean subtraction, colour-noise units) are documented in
``convnet.data.augment``.
"""
from .errors import BadImageError, DataError, WorkerError
from .loader import BatchIterator, Dataset
from .sources import open_spec


def open_source(spec=None, *, crop=None, flip=True, color_noise=0.1, workers=None, prefetch=4,
                on_error="skip", start_method="spawn", stats_samples=256, val_labels=None):
    """Open a data source (see the module docstring) and return a Dataset."""
    folder_opts = {"stats_samples": stats_samples, "val_labels": val_labels}
    source = open_spec(spec, **folder_opts)
    return Dataset(source, crop=crop, flip=flip, color_noise=color_noise, workers=workers,
                   prefetch=prefetch, on_error=on_error, start_method=start_method)


__all__ = ["open_source", "Dataset", "BatchIterator", "DataError", "BadImageError", "WorkerError"]
