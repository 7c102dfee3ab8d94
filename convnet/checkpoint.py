"""Checkpoints: numpy ``.npz`` (the arrays) + JSON (everything else), never pickle.

A checkpoint at step S is the pair ``ckpt-<S>.npz`` / ``ckpt-<S>.json`` in the save directory.
Both are written atomically (temporary file, fsync, rename, fsync of the directory), the arrays
first: a JSON file exists only once its arrays are safely on disk, so a run killed at any moment
leaves the previous checkpoint intact and the new one either complete or absent. Only the last
``keep`` checkpoints are kept.

The JSON holds the counters (step, epoch, batch within the epoch), the seed (every random draw
of a run — initial weights, data order, augmentation, dropout masks — is a pure function of the
seed and these counters, so they are the RNG state), the learning-rate schedules' state, the
config files' text and the run's options.
"""
import glob
import json
import os
import re

import numpy as np

__all__ = ["CheckpointError", "save", "load", "latest", "list_checkpoints"]

FORMAT = "convnet-checkpoint-1"
_NAME = re.compile(r"ckpt-(\d+)\.json$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the net."""


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path, write):
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def list_checkpoints(directory):
    """[(step, json path)] of the complete checkpoints in a directory, oldest first."""
    out = []
    for p in glob.glob(os.path.join(directory, "ckpt-*.json")):
        m = _NAME.search(p)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest(directory):
    cks = list_checkpoints(directory)
    return cks[-1][1] if cks else None


def save(directory, step, arrays, meta, keep=3):
    """Writes checkpoint `step` (arrays: {name: ndarray}; meta: JSON-able dict); returns the
    JSON path. Older checkpoints beyond the last `keep` are deleted."""
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, f"ckpt-{step:08d}")
    _atomic_write(base + ".npz", lambda f: np.savez(f, **arrays))
    meta = dict(meta, format=FORMAT, step=step, arrays=os.path.basename(base + ".npz"))
    text = json.dumps(meta, indent=1, sort_keys=True).encode()
    _atomic_write(base + ".json", lambda f: f.write(text))
    _fsync_dir(directory)
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        os.remove(old)
        npz = old[:-len(".json")] + ".npz"
        if os.path.exists(npz):
            os.remove(npz)
    return base + ".json"


def load(path):
    """(meta, arrays) of a checkpoint: `path` is its JSON file or a save directory (its latest
    checkpoint)."""
    if os.path.isdir(path):
        found = latest(path)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoint (ckpt-*.json) in this directory")
        path = found
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a convnet checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    npz = os.path.join(os.path.dirname(path), meta["arrays"])
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{npz}: cannot read checkpoint arrays: {e}") from None
    meta["path"] = path
    return meta, arrays
