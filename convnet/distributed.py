"""Data parallelism over processes with MPI: ``mpirun -n K python -m convnet.train CONFIG ...``.

mpi4py over any MPI (``pip install convnet[mpi]`` brings mpi4py and MPICH's wheel, whose
``mpiexec`` is then on the venv's PATH; a system Open MPI or MPICH works as well). A process
started without an MPI launcher, or as the only rank, runs as before and never imports mpi4py.

- Sharding. ``--batch-size`` is per rank: the global batch is B = K x batch. Every rank's loader
  makes the same global batch (order and augmentation are functions of the seed, epoch and
  image), and rank r keeps images [r*B//K, (r+1)*B//K) of it; so K ranks with batch B/K see
  exactly the images of one rank with batch B. Test batches are cut the same way, their
  statistics summed over the ranks (and --multiview-test's outputs gathered in rank order).
- Gradients. The cost's gradient is the mean over the global batch; the gradients of each
  rank's weights (summed over its replicas first, convnet/net.py) are summed over the ranks
  with non-blocking MPI allreduces on host buffers, in buckets of about ``BUCKET_BYTES`` in the
  order the backward pass completes them. A bucket starts as soon as its last gradient is
  ready, and is progressed (MPI_Test) after every later gradient, so the sums travel while the
  rest of the backward pass computes; the update waits for all of them. For nets on CUDA or
  emulated devices the buckets start after the backward pass (the gradients are copied to the
  host first): no overlap there yet, and no NCCL.
- Start and resume. Every rank starts from rank 0's weights (broadcast once) and resumes from
  the same checkpoint; rank 0 alone prints, logs and writes checkpoints. Checkpoints hold the
  global batch size, so a run saved by K ranks resumes on K' ranks (K' dividing the global
  batch) or on one process, and the other way round.
- Faults. No wait is unbounded: every rank tells every other when it has finished a step's
  backward pass (a small non-blocking message), and each wait polls against a deadline
  (``--mpi-timeout``). When it passes, the error names the ranks whose message is missing (dead
  or hung), and the job is aborted, so no rank waits forever. A rank that exits or is killed
  is usually caught first by the launcher: MPICH's mpiexec then ends every rank at once and
  names the dead process by its process id, which rank 0 printed for every rank at the start.
"""
import os
import sys
import threading
import time

import numpy as np

from .cli import UserError
from .tensor import from_numpy

__all__ = ["DistributedError", "World", "from_environment", "abort", "GradientSync",
           "DistributedNet", "BUCKET_BYTES", "DEFAULT_TIMEOUT"]

BUCKET_BYTES = 4 << 20
DEFAULT_TIMEOUT = 120.0
ABORT_GRACE_S = 0.5  # between printing the error and aborting the job (see abort)
_LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
_TAG_DONE = 17  # "rank r finished the backward pass of step t"
STAT_KEYS = ("logprob", "top1", "top5")  # a cost layer's statistics (sums over images)


class DistributedError(RuntimeError):
    """Another rank is dead or hung, or the ranks disagree."""


def launched_by_mpi():
    """Whether an MPI launcher (mpirun / mpiexec of MPICH or Open MPI) started this process."""
    return any(v in os.environ for v in _LAUNCHER_VARIABLES)


def from_environment(timeout=DEFAULT_TIMEOUT):
    """The World of an MPI job of several ranks, or None (a single process)."""
    if not launched_by_mpi():
        return None
    if not timeout > 0:
        raise UserError(f"--mpi-timeout must be > 0 seconds, got {timeout:g}")
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError("started by an MPI launcher, but mpi4py is not installed: "
                        "pip install 'convnet[mpi]'") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return None
    return World(MPI, comm, timeout)


def abort(code=1):
    """Ends every rank of the job: after an error on this one the others may be waiting in a
    collective that can no longer complete. The launcher forwards each rank's output through a
    pipe and stops forwarding when the job is aborted: the error just printed gets a moment to
    reach the terminal first."""
    from mpi4py import MPI
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    MPI.COMM_WORLD.Abort(code)


class World:
    """The ranks of the job: ``rank``, ``size``, and collectives that never wait forever."""

    def __init__(self, mpi, comm, timeout):
        self.MPI, self.comm = mpi, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = float(timeout)
        self._done_buf = np.zeros(1, np.int64)
        self._done_in = {}

    def pids(self):
        """{rank: process id} of every rank (MPICH's mpiexec names a rank that died by its
        process id; the trainer prints this table at the start)."""
        mine = np.zeros(self.size)
        mine[self.rank] = os.getpid()
        return {r: int(p) for r, p in enumerate(self.sum(mine, "the exchange of process ids"))}

    # -- sharding --------------------------------------------------------------------------
    def bounds(self, n, rank=None):
        """Images [lo, hi) of a global batch of n that `rank` (default: this one) trains on."""
        r = self.rank if rank is None else rank
        return r * n // self.size, (r + 1) * n // self.size

    def capacity(self, batch):
        """The most images any rank gets from a global batch of `batch`."""
        return -(-batch // self.size)

    # -- waiting with a deadline -----------------------------------------------------------
    def wait(self, requests, what, step=None):
        """Waits for MPI requests, polling; past the deadline raises DistributedError naming
        the ranks that have not reported the end of step `step`'s backward pass."""
        deadline = time.monotonic() + self.timeout
        pause = 1e-5
        while not self.MPI.Request.Testall(requests):
            if time.monotonic() > deadline:
                raise DistributedError(self._timeout_text(what, step))
            time.sleep(pause)
            pause = min(pause * 2, 2e-3)

    def _timeout_text(self, what, step):
        late = sorted(r for r, req in self._done_in.items() if not req.Test())
        if step is not None and late:
            who = ", ".join(f"rank {r}" for r in late)
            return (f"rank {self.rank}: {what} of step {step} did not complete within "
                    f"{self.timeout:g} s: {who} never finished that step's backward pass (dead "
                    "or hung); stopping")
        return (f"rank {self.rank}: {what} did not complete within {self.timeout:g} s (another "
                "rank is dead or hung); stopping")

    def announce_done(self, step):
        """Tells every other rank that this one finished step `step`'s backward pass, and
        posts the receives of theirs (read by the timeout message). Returns the requests of
        both, to be waited for."""
        self._done_buf[0] = step
        sends = [self.comm.Isend(self._done_buf, dest=r, tag=_TAG_DONE)
                 for r in range(self.size) if r != self.rank]
        self._done_in = {r: self.comm.Irecv(np.zeros(1, np.int64), source=r, tag=_TAG_DONE)
                         for r in range(self.size) if r != self.rank}
        return sends + list(self._done_in.values())

    def sum(self, values, what):
        """The sum over the ranks of a float64 vector (test statistics)."""
        buf = np.array(values, np.float64)
        self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)], what)
        return buf

    def gather_columns(self, array, what):
        """Every rank's (..., n_r) array joined along the last axis in rank order."""
        counts = np.zeros(self.size, np.int64)
        counts[self.rank] = array.shape[-1]
        self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, counts, op=self.MPI.SUM)], what)
        rows = int(np.prod(array.shape[:-1]))
        flat = np.ascontiguousarray(array, np.float32).reshape(rows, array.shape[-1])
        out = np.zeros((self.size, rows, int(counts.max())), np.float32)
        out[self.rank, :, :flat.shape[1]] = flat
        self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)], what)
        parts = [out[r, :, :counts[r]] for r in range(self.size)]
        return np.concatenate(parts, axis=1).reshape(array.shape[:-1] + (-1,))

    def broadcast_arrays(self, arrays, what):
        """Rank 0's float32 arrays, in place on every rank (sorted by name)."""
        reqs = [self.comm.Ibcast(arrays[k], root=0) for k in sorted(arrays)]
        self.wait(reqs, what)


class _Bucket:
    __slots__ = ("params", "offsets", "buf", "ready", "request", "started", "done")

    def __init__(self, params):
        self.params = params
        sizes = [int(np.prod(p.shape)) for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.buf = np.zeros(int(self.offsets[-1]), np.float32)
        self.ready, self.request, self.started, self.done = 0, None, 0.0, 0.0


class GradientSync:
    """The net's gradient hook (Net.set_grad_hook): buckets of gradients summed over the ranks
    while the backward pass goes on. ``last``: the last step's figures (bytes, buckets,
    seconds from the first bucket's start to the last's end, seconds the update waited)."""

    def __init__(self, net, world, bucket_bytes=BUCKET_BYTES):
        self.net, self.world = net, world
        self.host = all(d.type == "cpu" for d in net.devices)
        net.set_grad_hook(self)
        buckets, current, size = [], [], 0
        for p in net.grad_order:
            current.append(p)
            size += 4 * int(np.prod(p.shape))
            if size >= bucket_bytes:
                buckets.append(current)
                current, size = [], 0
        if current:
            buckets.append(current)
        self.buckets = [_Bucket(ps) for ps in buckets]
        self.where = {id(p): (b, i) for b in self.buckets for i, p in enumerate(b.params)}
        self._lock = threading.Lock()  # hooks of several CPU devices run on their threads
        self._active = []
        self.step = self._next = 0
        self.last = {}

    def begin(self, step):
        self.step = step
        for b in self.buckets:
            b.ready, b.request = 0, None
        self._next = 0

    def ready(self, p):
        """The summed gradient of p is complete on its owner (called on that device's compute
        stream, in backward order): copy it into its bucket; start every bucket complete up to
        it, in bucket order (every rank starts them in the same order); progress the others."""
        if not self.host:
            return
        b, i = self.where[id(p)]
        b.buf[b.offsets[i]:b.offsets[i + 1]] = p.grad.numpy().reshape(-1)
        with self._lock:
            b.ready += 1
            self._start_ready()
            if self._active:
                self.world.MPI.Request.Testall(self._active)

    def _start_ready(self):
        MPI = self.world.MPI
        while self._next < len(self.buckets):
            b = self.buckets[self._next]
            if b.ready < len(b.params):
                return
            b.started = time.perf_counter()
            b.request = self.world.comm.Iallreduce(MPI.IN_PLACE, b.buf, op=MPI.SUM)
            self._active.append(b.request)
            self._next += 1

    def finish(self):
        """Between backward and update: every bucket summed over the ranks, back in the
        gradients (the host waits here, at most the timeout)."""
        t0 = time.perf_counter()
        self.net.drain()  # the hooks of other threads have run; errors surface here
        if not self.host:
            for b in self.buckets:
                for i, p in enumerate(b.params):
                    b.buf[b.offsets[i]:b.offsets[i + 1]] = p.grad.numpy().reshape(-1)
                b.ready = len(b.params)
            self._start_ready()
        messages = self.world.announce_done(self.step)
        t_wait = time.perf_counter()
        self.world.wait([b.request for b in self.buckets] + messages, "the gradient allreduce",
                        self.step)
        t_end = time.perf_counter()
        self._active = []
        for b in self.buckets:
            for i, p in enumerate(b.params):
                p.grad.copy_(from_numpy(b.buf[b.offsets[i]:b.offsets[i + 1]].reshape(p.shape)))
        first = min(b.started for b in self.buckets) if self.buckets else t_wait
        self.last = {"bytes": sum(b.buf.nbytes for b in self.buckets),
                     "buckets": len(self.buckets), "allreduce_s": t_end - first,
                     "exposed_s": t_end - t_wait, "finish_s": time.perf_counter() - t0}


class DistributedNet:
    """A Net trained by every rank on its shard of each global batch; the methods the trainer
    calls take and return global batches and statistics. Everything else is the local Net's."""

    def __init__(self, net, world, bucket_bytes=BUCKET_BYTES):
        self._net, self.world = net, world
        self.sync = GradientSync(net, world, bucket_bytes)
        net.slice_base = world.rank * net.slices  # each rank's dropout masks are its own
        self._empty = False
        arrays = net.state_arrays()
        world.broadcast_arrays(arrays, "the broadcast of rank 0's weights")
        net.load_state_arrays(arrays, "rank 0's weights")

    def __getattr__(self, name):
        return getattr(self._net, name)

    def _global(self, stats, what):
        """Every cost's statistics (sums over images) summed over the ranks."""
        names = [C.name for C in self._net.costs]
        total = self.world.sum([stats[c][k] for c in names for k in STAT_KEYS], what)
        it = iter(total)
        return {c: {k: float(next(it)) for k in STAT_KEYS} for c in names}

    def train_step(self, images, labels, *, step, epoch, progress):
        n = images.shape[-1]
        lo, hi = self.world.bounds(n)
        if hi == lo:
            raise DistributedError(f"a training batch of {n} images cannot be shared by "
                                   f"{self.world.size} ranks (each needs one)")
        self.sync.begin(step)
        stats = self._net.train_step(images[..., lo:hi], labels[lo:hi], step=step, epoch=epoch,
                                     progress=progress, mean_over=n)
        return self._global(stats, f"the statistics of step {step}")

    def forward(self, images, labels, *, train, step=0):
        lo, hi = self.world.bounds(images.shape[-1])
        self._empty = hi == lo  # a last test batch with fewer images than ranks
        if self._empty:
            stats = {C.name: dict.fromkeys(STAT_KEYS, 0.0) for C in self._net.costs}
        else:
            stats = self._net.forward(images[..., lo:hi], labels[lo:hi], train=train, step=step)
        return self._global(stats, "the test statistics")

    def output(self, name, n=None):
        """The layer's output for the whole (global) batch of the last forward pass."""
        mine = (np.zeros(self._net.by_name[name].out_shape + (0,), np.float32) if self._empty
                else self._net.output(name, n))
        return self.world.gather_columns(mine, f"the output of {name}")
