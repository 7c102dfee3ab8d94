"""Batches from a source: epoch order, augmentation, worker processes and shared memory."""
from __future__ import annotations

import itertools
import mmap
import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
import weakref
from collections import OrderedDict
from multiprocessing import shared_memory

import numpy as np

from ..device import module_for
from . import augment, sources
from .errors import BadImageError, DataError, WorkerError

_iter_ids = itertools.count(1)


def default_workers(source) -> int:
    """0 (in-process) for in-memory sources, where numpy batch assembly is cheap; otherwise
    half the cores (at least 1, at most 4), leaving the rest to the trainer."""
    if isinstance(source, sources.ArraySource):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


# ---------------------------------------------------------------- worker side

def _attach(name, nbytes):
    """Map an existing shared-memory block without registering it with the resource tracker
    (only the creating process owns and unlinks it)."""
    path = "/dev/shm/" + name
    if os.path.exists(path):
        fd = os.open(path, os.O_RDWR)
        try:
            return mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
    shm = shared_memory.SharedMemory(name=name)  # non-Linux fallback
    try:
        from multiprocessing import resource_tracker
        resource_tracker.unregister(shm._name, "shared_memory")
    except Exception:
        pass
    return shm.buf


def _worker_main(wid, reader_config, asm_args, task_q, result_q, parent_pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and shuts us down
    try:
        reader = sources.make_reader(reader_config)
        asm = augment.Assembler(**asm_args)
        # One assembly thread per worker: the workers already use the cores the trainer leaves.
        module_for("cpu").set_num_threads(1)
    except BaseException as e:
        result_q.put(("fatal", wid, f"worker {wid} could not open the source: {type(e).__name__}: {e}"))
        return
    maps = OrderedDict()
    while True:
        try:
            task = task_q.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:
                return  # orphaned
            continue
        if task is None:
            return
        it_id, bno, shm_name, nbytes, cap, split, mode, idx, keys, labels, seed, epoch, on_error = task
        try:
            if shm_name not in maps:
                try:
                    maps[shm_name] = _attach(shm_name, nbytes)
                except FileNotFoundError:
                    result_q.put(("gone", it_id, bno))
                    continue
                while len(maps) > 16:
                    maps.popitem(last=False)
            maps.move_to_end(shm_name)
            buf = maps[shm_name]
            imgs = np.frombuffer(buf, np.float32, count=cap * asm.crop * asm.crop * 3)
            labs = np.frombuffer(buf, np.int32, count=cap, offset=cap * asm.crop * asm.crop * 3 * 4)
            n, skipped = asm.build(reader, split, mode, idx, keys, labels, imgs, labs,
                                   seed=seed, epoch=epoch, on_error=on_error)
            del imgs, labs
            result_q.put(("ok", it_id, bno, n, skipped))
        except BadImageError as e:
            result_q.put(("bad", it_id, bno, e.path, e.reason))
        except Exception as e:
            result_q.put(("err", it_id, bno, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


# ---------------------------------------------------------------- main side

class _Pool:
    def __init__(self, n, reader_config, asm_args, start_method):
        self.ctx = mp.get_context(start_method)
        self.task_q = self.ctx.Queue()
        self.result_q = self.ctx.Queue()
        self.procs = []
        self.pending = {}   # (it_id, bno) -> message
        self.broken = None
        for w in range(n):
            p = self.ctx.Process(target=_worker_main, name=f"convnet-data-{w}", daemon=True,
                                 args=(w, reader_config, asm_args, self.task_q, self.result_q, os.getpid()))
            p.start()
            self.procs.append(p)

    def check_alive(self, what):
        for w, p in enumerate(self.procs):
            if p.exitcode is not None:
                code = p.exitcode
                how = (f"killed by signal {signal.Signals(-code).name}" if code < 0 and -code in
                       signal.valid_signals() else f"exit code {code}")
                self.broken = (f"data worker {w} (pid {p.pid}) died ({how}) while {what}; "
                               "the loader cannot continue")
                raise WorkerError(self.broken)

    def wait(self, key, what):
        """Wait for the result of (it_id, bno), checking on entry and every 0.2 s that all workers
        live (on entry too: the survivors may have produced every batch the dead one left)."""
        if self.broken:
            raise WorkerError(self.broken)
        self.check_alive(what)
        while key not in self.pending:
            try:
                msg = self.result_q.get(timeout=0.2)
            except queue.Empty:
                self.check_alive(what)
                continue
            if msg[0] == "fatal":
                self.broken = msg[2]
                raise WorkerError(msg[2])
            self.pending[(msg[1], msg[2])] = msg
        return self.pending.pop(key)

    def drop(self, it_id):
        for k in [k for k in self.pending if k[0] == it_id]:
            del self.pending[k]

    def close(self):
        for _ in self.procs:
            try:
                self.task_q.put_nowait(None)
            except Exception:
                pass
        deadline = time.monotonic() + 2.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(1.0)
        for q in (self.task_q, self.result_q):
            q.close()
            q.cancel_join_thread()
        self.procs = []


class BatchIterator:
    """Iterates over (images, labels) for one pass.  ``images`` is float32 C-contiguous
    (3, crop, crop, N), ``labels`` int32 (N,); both are views of a reused buffer (a shared-memory
    slot when workers > 0) valid until the next batch is requested: copy them to keep them.

    ``skipped`` lists (path, reason) of unreadable images met so far; ``summary()`` describes
    the pass.  ``len()`` is the number of batches.

    A batch holding unreadable images is shortened (its readable ones only).  A batch none of
    whose images is readable is refilled from the images that follow it in the pass's order
    (wrapping round), one batch's worth at a time, until some are readable: it is never empty,
    and what it holds depends only on the pass's order and the files, so a resumed run sees the
    same batches.  A pass in which no image at all is readable raises DataError."""

    def __init__(self, ds, split, mode, batches, seed, epoch, label):
        self.ds, self.split, self.mode, self.seed, self.epoch = ds, split, mode, seed, epoch
        self._batches = batches                 # list of index arrays
        self.label = label
        self.skipped = []
        self._refill_buf = None
        self._skipped_paths = set()
        self.images_seen = 0
        self._next = 0                          # next batch to yield
        self._submitted = 0
        self._closed = False
        self._id = next(_iter_ids)
        V = 10 if mode == "multiview" else 1
        self._cap = max((len(b) for b in batches), default=0) * V
        c = ds.crop
        self._img_elems = 3 * c * c * self._cap
        self._nbytes = max(1, self._img_elems * 4 + self._cap * 4)
        self._slots = []
        self._free = []
        self._held = None
        self._in_flight = {}
        if ds.workers == 0:
            self._buf = _aligned_floats(self._img_elems)
            self._lab = np.empty(self._cap, np.int32)
        else:
            self._pool = ds._get_pool()
            k = max(2, ds.prefetch)
            self._maps = []
            for _ in range(min(k, max(1, len(batches)))):
                shm = shared_memory.SharedMemory(create=True, size=self._nbytes)
                self._slots.append(shm)
                # Our own mapping of the block: batches are views of it, so closing the
                # SharedMemory object never meets exported buffers.
                self._maps.append(_attach(shm.name, self._nbytes))
                shm.close()
            self._free = list(range(len(self._slots)))
            self._finalizer = weakref.finalize(self, _release_slots, self._slots)

    def __len__(self):
        return len(self._batches)

    def __iter__(self):
        return self

    def _task(self, bno, slot):
        idx = self._batches[bno]
        src = self.ds.source
        keys = [src.key(self.split, int(i)) for i in idx] if isinstance(src, sources.FolderSource) else None
        return (self._id, bno, self._slots[slot].name, self._nbytes, self._cap, self.split, self.mode,
                idx, keys, self.ds.labels_of(self.split), self.seed, self.epoch, self.ds.on_error)

    def __next__(self):
        if self._closed or self._next >= len(self._batches):
            self.close()
            raise StopIteration
        try:
            return self._advance()
        except BaseException:
            self.close()
            raise

    def _advance(self):
        bno = self._next
        src = self.ds.source
        if self.ds.workers == 0:
            idx = self._batches[bno]
            keys = [src.key(self.split, int(i)) for i in idx] if isinstance(src, sources.FolderSource) else None
            n, skipped = self.ds.assembler.build(src, self.split, self.mode, idx, keys,
                                                 self.ds.labels_of(self.split), self._buf, self._lab,
                                                 seed=self.seed, epoch=self.epoch, on_error=self.ds.on_error)
            self._next += 1
            return self._record(n, skipped, self._buf, self._lab, bno)
        pool = self._pool
        if self._held is not None:      # the previous batch is done with: its slot is free again
            self._free.append(self._held)
            self._held = None
        while self._free and self._submitted < len(self._batches):
            slot = self._free.pop(0)
            pool.task_q.put(self._task(self._submitted, slot))
            self._in_flight[self._submitted] = slot
            self._submitted += 1
        msg = pool.wait((self._id, bno), f"preparing {self.label} batch {bno}")
        slot = self._in_flight.pop(bno)
        self._next += 1
        self._held = slot
        if msg[0] == "ok":
            buf = self._maps[slot]
            imgs = np.frombuffer(buf, np.float32, count=self._img_elems)
            labs = np.frombuffer(buf, np.int32, count=self._cap, offset=self._img_elems * 4)
            return self._record(msg[3], msg[4], imgs, labs, bno)
        if msg[0] == "bad":
            raise BadImageError(msg[3], msg[4])
        if msg[0] == "gone":
            raise WorkerError(f"shared memory of {self.label} batch {bno} vanished")
        raise WorkerError(f"data worker failed on {self.label} batch {bno}: {msg[3]}")

    def _note_skipped(self, skipped):
        """Adds the (path, reason) not yet listed: a file a refill met is met again in its own
        batch, and is counted once."""
        for p in skipped:
            if p[0] not in self._skipped_paths:
                self._skipped_paths.add(p[0])
                self.skipped.append(p)

    def _record(self, n, skipped, flat, labs, bno):
        self._note_skipped(skipped)
        if n == 0:
            n, flat, labs = self._refill(bno)
        self.images_seen += n // (10 if self.mode == "multiview" else 1)
        c = self.ds.crop
        return flat[:3 * c * c * n].reshape(3, c, c, n), labs[:n]

    def _refill(self, bno):
        """(n, images, labels) for batch `bno`, none of whose images could be read: the first
        readable images among the next batch-sized runs of the pass's order, assembled in this
        process (a rare event) into a buffer of its own."""
        size = len(self._batches[bno])
        later = self._batches[bno + 1:] + self._batches[:bno]
        rest = np.concatenate(later) if later else np.zeros(0, np.int64)
        if self._refill_buf is None:
            self._refill_buf = (_aligned_floats(self._img_elems), np.empty(self._cap, np.int32))
        buf, lab = self._refill_buf
        src = self.ds.source
        for lo in range(0, len(rest), size):
            idx = rest[lo:lo + size]
            keys = ([src.key(self.split, int(i)) for i in idx]
                    if isinstance(src, sources.FolderSource) else None)
            n, skipped = self.ds.assembler.build(src, self.split, self.mode, idx, keys,
                                                 self.ds.labels_of(self.split), buf, lab,
                                                 seed=self.seed, epoch=self.epoch,
                                                 on_error=self.ds.on_error)
            self._note_skipped(skipped)
            if n:
                return n, buf, lab
        raise DataError(f"{self.label}: none of the {size + len(rest)} images of this pass "
                        f"could be read (first: {self.skipped[0][0]}: {self.skipped[0][1]})")

    def summary(self) -> str:
        s = (f"{self.label}: {self.images_seen} images in {self._next} of {len(self._batches)} batches, "
             f"{len(self.skipped)} unreadable image(s) skipped")
        if self.skipped:
            s += ":\n" + "\n".join(f"  {p}: {r}" for p, r in self.skipped)
        return s

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.ds.workers and self._slots:
            self._pool.drop(self._id)
            self._finalizer()


def _aligned_floats(n):
    """float32 (n,) starting on a 64-byte boundary, as shared-memory slots do: the assembly
    kernel streams its stores only to whole, aligned cache lines."""
    raw = np.empty(n + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip:skip + n]


def _release_slots(slots):
    """Unlink the blocks (their memory is freed once the last mapping, ours or a worker's, goes)."""
    for s in slots:
        try:
            s.unlink()
        except FileNotFoundError:
            pass


class Dataset:
    """A source plus augmentation settings.  See the package docstring for the API."""

    def __init__(self, source, *, crop=None, flip=True, color_noise=0.1, workers=None,
                 prefetch=4, on_error="skip", start_method="spawn"):
        if on_error not in ("skip", "raise"):
            raise ValueError("on_error must be 'skip' or 'raise'")
        self.source = source
        self.crop = int(crop if crop is not None else source.default_crop)
        if not (1 <= self.crop <= min(source.size)):
            raise DataError(f"crop {self.crop} does not fit the {source.size[0]}x{source.size[1]} "
                            f"images of {source.kind} source")
        self.flip, self.color_noise = bool(flip), float(color_noise)
        self.workers = default_workers(source) if workers is None else int(workers)
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        self.prefetch, self.on_error, self.start_method = int(prefetch), on_error, start_method
        self._asm_args = dict(size=source.size, crop=self.crop, mean=source.mean,
                              eigvals=source.eigvals, eigvecs=source.eigvecs, flip=self.flip,
                              color_noise=self.color_noise)
        self.assembler = augment.Assembler(**self._asm_args)
        self._pool = None
        self._finalizer = weakref.finalize(self, _close_pool, [None])

    # -- description
    @property
    def num_classes(self) -> int:
        return len(self.source.classes)

    @property
    def class_names(self) -> list:
        return list(self.source.class_names)

    @property
    def class_ids(self) -> list:
        return list(self.source.classes)

    @property
    def image_shape(self) -> tuple:
        return (3, self.crop, self.crop)

    @property
    def num_train(self) -> int:
        return self.source.count(sources.TRAIN)

    @property
    def num_test(self) -> int:
        return self.source.count(sources.TEST)

    @property
    def mean(self) -> np.ndarray:
        """The (3, crop, crop) mean subtracted from every batch (centre crop of the mean image)."""
        return self.assembler.mean_crop

    def labels_of(self, split):
        return self.source.labels(split)

    def __repr__(self):
        return (f"<Dataset {self.source.describe()}; crop {self.crop}, flip {self.flip}, "
                f"colour noise {self.color_noise}, workers {self.workers}>")

    # -- batches
    @staticmethod
    def _split_batches(order, batch_size, drop_last):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = len(order) - (len(order) % batch_size if drop_last else 0)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]

    def num_train_batches(self, batch_size: int, drop_last: bool = True) -> int:
        """How many batches train_batches(..., batch_size, drop_last=drop_last) has in an epoch."""
        return len(self._split_batches(range(self.num_train), batch_size, drop_last))

    def train_batches(self, epoch: int, batch_size: int, seed: int = 0, drop_last: bool = True,
                      start: int = 0):
        """The epoch's batches from batch `start` on (resuming mid-epoch: the order and every
        augmentation are functions of (seed, epoch, image), so batch k is the same either way)."""
        order = augment.epoch_order(self.num_train, seed, epoch)
        batches = self._split_batches(order, batch_size, drop_last)
        if not 0 <= start <= len(batches):
            raise ValueError(f"start batch {start} is outside the epoch's {len(batches)} batches")
        return BatchIterator(self, sources.TRAIN, "train", batches[start:], seed, epoch,
                             f"train epoch {epoch + 1}")  # printed as the trainer counts: from 1

    def test_batches(self, batch_size: int, multiview: bool = False, drop_last: bool = False):
        if self.num_test == 0:
            raise DataError(f"{self.source.kind} source has no test/validation images")
        order = np.arange(self.num_test, dtype=np.int64)
        return BatchIterator(self, sources.TEST, "multiview" if multiview else "test",
                             self._split_batches(order, batch_size, drop_last), 0, 0,
                             "test (10 views)" if multiview else "test")

    # -- workers
    def _get_pool(self):
        if self._pool is None:
            self._pool = _Pool(self.workers, self.source.reader_config(), self._asm_args, self.start_method)
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_pool, [self._pool])
        elif self._pool.broken:
            raise WorkerError(self._pool.broken)
        return self._pool

    def close(self):
        self._finalizer()
        self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close_pool(holder):
    if holder[0] is not None:
        holder[0].close()
        holder[0] = None
