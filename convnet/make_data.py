"""Pack an ImageNet-layout image folder into memory-mappable shards.

    python -m convnet.make_data SRC DST [--shard-size N] [--workers N] [--size 256]

Every image is resized to --size on the shorter side and centre-cropped to size x size (the
paper's preprocessing), and stored raw as uint8.  DST receives, per split (train, test):

    train-00000.u8       uint8 (n, size, size, 3), RGB, row-major
    train-00000.labels   int32 little-endian (n,)
    mean.npy             float32 (size, size, 3): mean training image (numpy .npy, no pickle)
    meta.json            format, image_size, classes, class_names, per-shard files and counts,
                         PCA of RGB in [0, 1] units (eigvals descending, eigvecs as columns),
                         and the list of unreadable images that were skipped

Each shard is written to a temporary name, fsynced and renamed; progress.json (with the running
training statistics in progress-NNNNN.npy) is replaced atomically after every shard, so a run that
is interrupted can be started again with the same arguments and finishes the job without redoing
finished shards.  meta.json is written last: its presence means the job is complete.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys

import numpy as np

from .cli import Parser, error_prefix, int_at_least, prog_name
from .data import images
from .data.errors import BadImageError, DataError
from .data.sources import (SHARD_FORMAT, SHARD_VERSION, SPLIT_NAMES, fingerprint, pca_from_stats,
                           rgb_stats, scan_folder)


# The smallest --size accepted: a guard against typos (0, a negative size); 8x8 is already far
# below the smallest shipped net's 12x12.
MIN_SIZE = 8


def _atomic_write(path, data: bytes):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_json(path, obj):
    _atomic_write(path, json.dumps(obj, indent=1).encode("utf-8"))


def _atomic_npy(path, arr):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _decode(args):
    path, size = args
    try:
        return images.load_resized(path, size), None
    except BadImageError as e:
        return None, e.reason


class _Interrupted(Exception):
    pass


def make_data(src, dst, shard_size=1024, workers=None, size=256, strict=False, val_labels=None,
              progress=True, stop_after_shards=None, log=print):
    """Build (or resume building) the shard directory `dst` from the folder `src`."""
    if shard_size < 1:
        raise DataError("--shard-size must be >= 1")
    if size < MIN_SIZE:
        raise DataError(f"--size must be >= {MIN_SIZE}")
    d = scan_folder(src, val_labels)
    splits = {"train": d["train"], "test": d["test"]}
    job = {"src": os.path.abspath(src), "size": size, "shard_size": shard_size,
           "fingerprint": fingerprint([size, shard_size] + [
               f"{s}:{p}:{l}" for s in SPLIT_NAMES for p, l in zip(splits[s][0], splits[s][1].tolist())])}
    os.makedirs(dst, exist_ok=True)
    meta_path = os.path.join(dst, "meta.json")
    prog_path = os.path.join(dst, "progress.json")
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("job", {}).get("fingerprint") == job["fingerprint"]:
            log(f"{dst} is already complete")
            return meta
        raise DataError(f"{dst} already holds shards of a different source or settings; "
                        "choose an empty directory")
    state = {"job": job, "done": {"train": 0, "test": 0}, "shards": {"train": [], "test": []},
             "skipped": [], "stats": None, "count_pixels": 0}
    if os.path.isfile(prog_path):
        with open(prog_path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("job", {}).get("fingerprint") != job["fingerprint"]:
            raise DataError(f"{dst} holds an unfinished job for a different source or settings "
                            "(delete it or choose another directory)")
        state = old
    elif any(n.endswith(".u8") for n in os.listdir(dst)):
        raise DataError(f"{dst} holds shard files but no progress.json; choose an empty directory")

    acc = np.zeros((size, size, 3), np.float64)
    s1, s2 = np.zeros(3), np.zeros((3, 3))
    if state["stats"]:
        acc = np.load(os.path.join(dst, state["stats"]["sum_file"]), allow_pickle=False)
        s1 = np.asarray(state["stats"]["rgb_sum"])
        s2 = np.asarray(state["stats"]["rgb_outer"])
    n_train_images = sum(sh["count"] for sh in state["shards"]["train"])

    total = sum(len(splits[s][0]) for s in SPLIT_NAMES)

    def images_done():
        return sum(min(state["done"][s] * shard_size, len(splits[s][0])) for s in SPLIT_NAMES)

    # Progress: a tqdm line on a terminal; in a log file one line per shard.
    bar, shard_lines = None, progress and not sys.stderr.isatty()
    if progress and not shard_lines:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=images_done(), unit="img", desc="make_data", dynamic_ncols=True)
    nworkers = max(1, (os.cpu_count() or 2)) if workers is None else int(workers)
    pool = mp.get_context("spawn").Pool(nworkers) if nworkers > 0 else None
    written_now = 0
    try:
        for split in SPLIT_NAMES:
            paths, labels = splits[split]
            nshards = (len(paths) + shard_size - 1) // shard_size
            for k in range(state["done"][split], nshards):
                lo, hi = k * shard_size, min(len(paths), (k + 1) * shard_size)
                args = [(p, size) for p in paths[lo:hi]]
                results = pool.imap(_decode, args, chunksize=8) if pool else map(_decode, args)
                buf = np.empty((hi - lo, size, size, 3), np.uint8)
                labs, n, skipped = [], 0, []
                for j, (img, err) in enumerate(results):
                    if img is None:
                        if strict:
                            raise BadImageError(paths[lo + j], err)
                        skipped.append([paths[lo + j], err])
                    else:
                        buf[n] = img
                        labs.append(int(labels[lo + j]))
                        n += 1
                        if split == "train":
                            acc += img
                            a, b, _ = rgb_stats(img)
                            s1 += a
                            s2 += b
                    if bar:
                        bar.update(1)
                name = f"{split}-{k:05d}"
                _atomic_write(os.path.join(dst, name + ".u8"), buf[:n].tobytes())
                _atomic_write(os.path.join(dst, name + ".labels"), np.asarray(labs, "<i4").tobytes())
                _fsync_dir(dst)
                shards = [sh for sh in state["shards"][split] if sh["file"] != name + ".u8"]
                shards.append({"file": name + ".u8", "labels": name + ".labels", "count": n})
                state["shards"][split] = shards
                state["skipped"] += skipped
                state["done"][split] = k + 1
                if split == "train":
                    n_train_images += n
                    sum_file = f"progress-{k:05d}.npy"
                    _atomic_npy(os.path.join(dst, sum_file), acc)
                    old_sum = state["stats"]["sum_file"] if state["stats"] else None
                    state["stats"] = {"sum_file": sum_file, "rgb_sum": s1.tolist(), "rgb_outer": s2.tolist()}
                    _atomic_json(prog_path, state)
                    if old_sum and old_sum != sum_file:
                        try:
                            os.remove(os.path.join(dst, old_sum))
                        except FileNotFoundError:
                            pass
                else:
                    _atomic_json(prog_path, state)
                written_now += 1
                if shard_lines:
                    print(f"make_data: {name} written ({n} images, {len(skipped)} skipped); "
                          f"{images_done()}/{total} images done", file=sys.stderr, flush=True)
                if stop_after_shards is not None and written_now >= stop_after_shards:
                    raise _Interrupted()
    finally:
        if bar:
            bar.close()
        if pool:
            pool.terminate()
            pool.join()

    if n_train_images == 0:
        raise DataError(f"{src}: no readable training images")
    mean = (acc / n_train_images).astype(np.float32)
    _atomic_npy(os.path.join(dst, "mean.npy"), mean)
    eigvals, eigvecs = pca_from_stats(s1, s2, n_train_images * size * size)
    meta = {
        "format": SHARD_FORMAT, "version": SHARD_VERSION, "image_size": size,
        "classes": d["classes"], "class_names": d["class_names"],
        "splits": {s: {"count": sum(sh["count"] for sh in state["shards"][s]),
                       "shards": state["shards"][s]} for s in SPLIT_NAMES},
        "mean": "mean.npy",
        "pca": {"eigvals": eigvals.tolist(), "eigvecs": eigvecs.tolist(), "units": "RGB/255"},
        "skipped": state["skipped"], "job": job,
    }
    _atomic_json(meta_path, meta)
    _fsync_dir(dst)
    for name in os.listdir(dst):
        if name.startswith("progress") or name.endswith(".tmp"):
            os.remove(os.path.join(dst, name))
    return meta


def _check_paths(src, dst, val_labels):
    """The paths, checked before the (possibly long) scan of SRC and before DST is made."""
    if not os.path.isdir(src):
        raise DataError(f"{src}: " + ("not a directory" if os.path.exists(src)
                                      else "no such directory"))
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise DataError(f"{dst}: exists and is not a directory")
    if val_labels is not None and not os.path.isfile(val_labels):
        raise DataError(f"--val-labels {val_labels}: no such file")


def main(argv=None):
    ap = Parser(
        prog=prog_name("convnet.make_data", "convnet-make-data"),
        description="Pack an ImageNet-layout folder (SRC/train/<class>/*, SRC/val/...) into "
                    "memory-mappable shards of size x size uint8 images with labels, the mean image "
                    "and the RGB PCA.  Interrupted runs resume when started again.")
    ap.add_argument("src", help="source folder (train/<class>/*; val/<class>/* or val/* + val_labels.txt)")
    ap.add_argument("dst", help="output directory")
    ap.add_argument("--shard-size", type=int_at_least(1), default=1024, help="images per shard (default 1024)")
    ap.add_argument("--workers", type=int_at_least(0), default=None, help="decoding processes (default: all cores; 0 = in-process)")
    ap.add_argument("--size", type=int_at_least(MIN_SIZE), default=256,
                    help=f"stored image side (default 256, at least {MIN_SIZE})")
    ap.add_argument("--val-labels", default=None, help="labels file for a flat validation folder")
    ap.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--stop-after-shards", type=int_at_least(1), default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        _check_paths(a.src, a.dst, a.val_labels)
        meta = make_data(a.src, a.dst, a.shard_size, a.workers, a.size, a.strict, a.val_labels,
                         progress=not a.quiet, stop_after_shards=a.stop_after_shards)
    except _Interrupted:
        print("make_data: stopped early as asked; run again to finish", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("make_data: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
    except (DataError, OSError) as e:
        print(f"{error_prefix(ap.prog)} {e}", file=sys.stderr)
        return 2
    sk = meta["skipped"]
    if meta["splits"]["test"]["count"] == 0:
        print(f"make_data: note: {a.src} has no validation split (val/), which the trainer "
              "tests on: add one and run again into a new directory", file=sys.stderr)
    print(f"make_data: {meta['splits']['train']['count']} train and {meta['splits']['test']['count']} "
          f"test images in {a.dst}; {len(sk)} unreadable image(s) skipped" + "".join(f"\n  {p}: {r}" for p, r in sk))
    return 0


if __name__ == "__main__":
    sys.exit(main())
