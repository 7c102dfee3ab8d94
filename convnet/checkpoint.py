"""Checkpoints: numpy ``.npz`` (the arrays) + JSON (everything else), never pickle.

A checkpoint at step S is the pair ``ckpt-<S>.npz`` / ``ckpt-<S>.json`` in the save directory.
Both are written atomically (temporary file, fsync, rename, fsync of the directory), the arrays
first: a JSON file exists only once its arrays are safely on disk, so a run killed at any moment
leaves the previous checkpoint intact and the new one either complete or absent. Only the last
``keep`` checkpoints are kept.

The JSON holds the counters (step, epoch, batch within the epoch), the seed (every random draw
of a run — initial weights, data order, augmentation, dropout masks — is a pure function of the
seed and these counters, so they are the RNG state), the learning-rate schedules' state, the
config files' text, and under ``options`` the run's options that a resumed run restores
(convnet/train.py says which). Under ``checksums`` it holds, per array, its shape, dtype and the
CRC-32 of its bytes: ``load`` and ``verify`` check every field's type and every array against
them, so a truncated or bit-flipped file is reported as damaged (``CheckpointError``, one line),
never as a traceback from zipfile or json. Loading a save directory falls back from a damaged
latest checkpoint to the newest good one and lists the damaged ones in ``meta["damaged"]``.

``python -m convnet.checkpoint --verify PATH...`` checks checkpoints without training.
"""
import glob
import json
import numbers
import os
import re
import sys
import zipfile
import zlib

import numpy as np

__all__ = ["CheckpointError", "save", "load", "verify", "latest", "list_checkpoints",
           "set_aside", "main"]

FORMAT = "convnet-checkpoint-2"
# Format 1 (before per-array checksums) still loads; its arrays are checked by the zip CRCs only.
READABLE_FORMATS = ("convnet-checkpoint-1", FORMAT)
_NAME = re.compile(r"ckpt-(\d+)\.json$")
DAMAGED_SUFFIX = ".damaged"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, damaged or does not fit the net."""


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


def _crc32(a):
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


def list_checkpoints(directory):
    """[(step, json path)] of the complete checkpoints in a directory, oldest first."""
    out = []
    for p in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.json")):
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
    checksums = {k: {"shape": list(a.shape), "dtype": a.dtype.str, "crc32": _crc32(a)}
                 for k, a in arrays.items()}
    meta = dict(meta, format=FORMAT, step=step, arrays=os.path.basename(base + ".npz"),
                checksums=checksums)
    text = json.dumps(meta, indent=1, sort_keys=True).encode()
    _atomic_write(base + ".json", lambda f: f.write(text))
    _fsync_dir(directory)
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        os.remove(old)
        npz = old[:-len(".json")] + ".npz"
        if os.path.exists(npz):
            os.remove(npz)
    return base + ".json"


# -- reading and checking -----------------------------------------------------------------------

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _optional(check):
    return lambda v: v is None or check(v)


# Fields every checkpoint has, with the test their value must pass and what that test means.
_FIELDS = {
    "step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "batch_in_epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "best": (_optional(_is_number), "a number or null"),
    "def_path": (lambda v: isinstance(v, str), "a string"),
    "def_text": (lambda v: isinstance(v, str), "a string"),
    "params_path": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "params_text": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "arrays": (lambda v: isinstance(v, str) and v == os.path.basename(v) and v.endswith(".npz"),
               "the name of an .npz file beside the JSON file"),
    "options": (lambda v: isinstance(v, dict), "an object"),
    "schedules": (lambda v: isinstance(v, dict) and all(
        isinstance(s, dict) and isinstance(s.get("kind"), str) for s in v.values()),
        "an object of {kind: ...} objects"),
}
# The run options a checkpoint stores (convnet/train.py: which are restored, which may change).
_OPTIONS = {
    "data": (lambda v: isinstance(v, str), "a string"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "test_freq": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "keep": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "multiview_test": (lambda v: isinstance(v, bool), "true or false"),
}
_SCHEDULE_STATE = {"drops": _is_int, "bad": _is_int, "best": _optional(_is_number),
                   "first": _optional(_is_number)}


def _check_checksums(v):
    return isinstance(v, dict) and all(
        isinstance(c, dict) and isinstance(c.get("shape"), list)
        and all(_is_int(d) and d >= 0 for d in c["shape"]) and isinstance(c.get("dtype"), str)
        and _is_int(c.get("crc32")) for c in v.values())


# What every checkpoint has (save writes them); a training run's also has RUN_FIELDS.
CORE_FIELDS = ("step", "arrays")
RUN_FIELDS = tuple(_FIELDS)


def _check_meta(path, meta, required):
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged: the JSON is not an object")
    if meta.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{path}: not a convnet checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    for key, (ok, what) in _FIELDS.items():
        if key not in meta:
            if key in required:
                raise CheckpointError(f"{path}: damaged: field {key!r} is missing")
            continue
        if not ok(meta[key]):
            raise CheckpointError(f"{path}: damaged: field {key!r} must be {what}, got "
                                  f"{meta[key]!r:.60}")
    for key, (ok, what) in _OPTIONS.items():
        if key in meta.get("options", {}) and not ok(meta["options"][key]):
            raise CheckpointError(f"{path}: damaged: option {key!r} must be {what}, got "
                                  f"{meta['options'][key]!r:.60}")
    for name, st in meta.get("schedules", {}).items():
        if st["kind"] == "plateau" and not all(k in st and ok(st[k]) for k, ok in
                                               _SCHEDULE_STATE.items() if k != "first"):
            raise CheckpointError(f"{path}: damaged: the state of schedule {name!r} must have "
                                  f"integer drops and bad and a numeric best, got {st!r:.80}")
    if meta["format"] == FORMAT and not _check_checksums(meta.get("checksums")):
        raise CheckpointError(f"{path}: damaged: field 'checksums' must map every array to "
                              "{shape, dtype, crc32}")


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _read_arrays(npz, checksums):
    """The arrays of `npz`, each checked against its checksum record (when there is one) before
    its data is read, so a damaged header cannot ask for an enormous allocation."""
    arrays = {}
    try:
        with zipfile.ZipFile(npz) as z:
            members = {n[:-len(".npy")]: n for n in z.namelist() if n.endswith(".npy")}
            if checksums is not None and set(members) != set(checksums):
                missing = sorted(set(checksums) - set(members))
                extra = sorted(set(members) - set(checksums))
                raise CheckpointError(f"{npz}: damaged: arrays missing {missing}, unexpected "
                                      f"{extra}")
            for name, member in members.items():
                with z.open(member) as f:
                    read_header = _HEADER_READERS.get(np.lib.format.read_magic(f))
                    if read_header is None:
                        raise CheckpointError(f"{npz}: damaged: array {name!r} has an unknown "
                                              ".npy version")
                    shape, fortran, dtype = read_header(f)
                    if checksums is not None:
                        want = checksums[name]
                        if list(shape) != want["shape"] or dtype.str != want["dtype"]:
                            raise CheckpointError(
                                f"{npz}: damaged: array {name!r} is {dtype.str}{list(shape)}, "
                                f"the JSON file says {want['dtype']}{want['shape']}")
                    if dtype.hasobject:
                        raise CheckpointError(f"{npz}: array {name!r} holds Python objects "
                                              "(refused: checkpoints never hold pickles)")
                    count = int(np.prod(shape, dtype=np.int64))
                    data = f.read(count * dtype.itemsize)
                    if len(data) != count * dtype.itemsize:
                        raise CheckpointError(f"{npz}: damaged: array {name!r} is truncated")
                    a = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
                    if checksums is not None and _crc32(a) != checksums[name]["crc32"]:
                        raise CheckpointError(f"{npz}: damaged: array {name!r} does not match "
                                              "its checksum")
                    arrays[name] = a.copy()
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{npz}: damaged: the arrays file is missing") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
            MemoryError, OverflowError, NotImplementedError) as e:
        # What zipfile and numpy raise on a truncated or altered file (bad CRC, bad header...).
        raise CheckpointError(f"{npz}: damaged: {type(e).__name__}: {e}") from None
    return arrays


def verify(path, required=CORE_FIELDS):
    """(meta, arrays) of the checkpoint whose JSON file is `path`, after checking every field of
    the JSON (the `required` ones must be there; RUN_FIELDS for a training run's checkpoint)
    and every array against its checksum; raises CheckpointError saying what is wrong."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: damaged: cannot read the JSON: {e}") from None
    _check_meta(path, meta, required)
    arrays = _read_arrays(os.path.join(os.path.dirname(path), meta["arrays"]),
                          meta.get("checksums") if meta["format"] == FORMAT else None)
    meta["path"] = path
    return meta, arrays


def load(path, required=CORE_FIELDS):
    """(meta, arrays) of a checkpoint: `path` is its JSON file, or a save directory, whose
    newest good checkpoint is loaded; the damaged newer ones are listed in meta["damaged"] as
    (json path, reason). `required`: as for verify. Raises CheckpointError (one line) if none
    is good."""
    if not os.path.isdir(path):
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: no such checkpoint file or directory")
        meta, arrays = verify(path, required)
        meta["damaged"] = []
        return meta, arrays
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: no checkpoint (ckpt-*.json) in this directory")
    damaged = []
    for _, json_path in reversed(found):
        try:
            meta, arrays = verify(json_path, required)
        except CheckpointError as e:
            damaged.append((json_path, str(e)))
            continue
        meta["damaged"] = damaged
        return meta, arrays
    raise CheckpointError(f"{path}: no good checkpoint: "
                          + "; ".join(reason for _, reason in damaged))


def set_aside(json_path):
    """Renames a damaged checkpoint's files to ``*.damaged`` (kept for inspection, no longer
    listed), so that a run resumed from an older checkpoint does not meet it again."""
    npz = json_path[:-len(".json")] + ".npz"
    for p in (json_path, npz):
        if os.path.exists(p):
            os.replace(p, p + DAMAGED_SUFFIX)


def main(argv=None):
    """``python -m convnet.checkpoint --verify PATH...``: one line per checkpoint; exit status 0
    if all are good, 1 if any is damaged, 2 for a usage mistake."""
    from .cli import Parser
    p = Parser(prog="python -m convnet.checkpoint",
               description="Check checkpoints (every JSON field and every array's checksum) "
                           "without training.")
    p.add_argument("--verify", nargs="+", metavar="PATH", required=True,
                   help="ckpt-*.json files or save directories (every checkpoint in them)")
    args = p.parse_args(argv)
    bad = 0
    for path in args.verify:
        paths = [j for _, j in list_checkpoints(path)] if os.path.isdir(path) else [path]
        if not paths:
            print(f"{path}: no checkpoint (ckpt-*.json) in this directory")
            bad += 1
        for j in paths:
            try:
                meta, arrays = verify(j)
            except CheckpointError as e:
                print(e)
                bad += 1
                continue
            print(f"{j}: good (step {meta['step']}, {len(arrays)} arrays"
                  + (", no checksums: written before they were added)"
                     if meta["format"] != FORMAT else ", checksums match)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
