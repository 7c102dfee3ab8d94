"""Streams and events: how the executor orders work on several devices, the same on every backend.

A stream runs what is submitted to it in submission order. An event is recorded on one stream
(``stream.record(event)``: it fires when everything submitted to that stream before it is done)
and waited on by another (``stream.wait(event)``: what is submitted after the wait starts only
once the event's latest record at the time of the wait has fired), as with CUDA's
``cudaEventRecord`` / ``cudaStreamWaitEvent``. The host only submits; it waits for nothing until
``synchronize``. Each device has a compute stream (its kernels) and a copy stream (transfers).

Backends:
  cpu:N     a stream is a worker thread with a queue; the compute thread of a device is bound to
            that device's cores and runs its OpenMP teams there. An event is a counter under a
            condition variable.
  cuda:N    the device's compute stream (the one every op is issued on) and a copy stream
            (cudaStreamNonBlocking); events are cudaEvents; copies are cudaMemcpyPeerAsync (or
            staged through pinned host memory where peer access is unavailable).
  emu:N     the same calls as cuda, against the SIMT emulation, where streams complete work at
            once, in issue order, or deferred in adversarial orders (CONVNET_SIMT_STREAMS).
Several logical devices may share one GPU (convnet.net's device placement): each has its own
compute and copy streams, and copies between them are device-to-device copies on a copy stream.
A net on one CPU device runs inline on the calling thread: nothing to order.
"""
import os
import queue
import threading
import time

from .device import backend

__all__ = ["Event", "make_stream", "cpu_core_split"]


class Event:
    """Fires when the work before its latest ``record`` is done. ``records`` counts records
    issued by the host; ``fired`` (CPU) counts those completed."""

    def __init__(self, device, name):
        self.device, self.name = device, name
        self.records = 0
        self.fired = 0
        self._cond = threading.Condition()
        self._handle = None
        if device.type != "cpu":
            self._handle = backend(device).event_create(device.index)

    def _fire(self, count):
        with self._cond:
            self.fired = max(self.fired, count)
            self._cond.notify_all()

    def _wait_for(self, count):
        """Blocks until the `count`-th record has fired; says whether it had to block."""
        with self._cond:
            blocked = self.fired < count
            while self.fired < count:
                self._cond.wait()
        return blocked

    def synchronize(self):
        """The host waits until the latest record has fired (CUDA / emulated devices; nothing
        to wait for before the first record)."""
        if self._handle is not None and self.records:
            backend(self.device).event_synchronize(self._handle, self.device.index)

    def __del__(self):
        if self._handle is not None:
            try:
                backend(self.device).event_destroy(self._handle, self.device.index)
            except Exception:  # interpreter shutdown: the backend may be gone already
                pass


class _InlineStream:
    """One CPU device and nothing else: work runs at once on the calling thread."""

    def __init__(self, device, role):
        self.device, self.role = device, role
        self.busy_s = self.wait_s = 0.0
        self.trace = None

    def submit(self, fn, label=None, cores=None):
        # Process CPU time: the kernels' OpenMP team works for this thread.
        c0 = time.process_time() if self.trace is not None else 0.0
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        self.busy_s += t1 - t0
        if self.trace is not None:
            self.trace.append((label, t0, t1, time.process_time() - c0))

    def copy(self, dst, src, label=None):
        self.submit(lambda: dst.copy_(src), label)

    def record(self, event):
        event.records += 1
        event._fire(event.records)

    def wait(self, event):
        pass

    def synchronize(self):
        pass

    def close(self):
        pass


class _ThreadStream:
    """A CPU stream: one worker thread running its queue in order. After a failure the stream
    still fires its events (so no other stream waits forever) but skips work; ``synchronize``
    raises the first error. ``trace``: None, or a list the worker appends (label, start, end,
    cpu) to for every task and every wait (label "wait EVENT", cpu 0) that blocked; cpu is the
    worker thread's CPU seconds in the task (other jobs on a shared machine take the rest of
    end - start; on lent cores, this thread's share only)."""

    def __init__(self, device, role, cores=None, threads=1):
        self.device, self.role = device, role
        self.busy_s = self.wait_s = 0.0
        self.trace = None
        self._queue = queue.SimpleQueue()
        self._error = None
        self._idle = threading.Condition()
        self._submitted = self._done = 0
        self._cores, self._threads = cores, threads
        self._thread = threading.Thread(target=self._run, name=f"{device}-{role}", daemon=True)
        self._thread.start()

    def _run(self):
        if self._cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self._cores)  # this thread only; OpenMP teams inherit it
        if self.role == "compute":
            backend(self.device).set_num_threads(self._threads)
        while True:
            kind, arg = self._queue.get()
            if kind == "stop":
                return
            try:
                if kind == "run":
                    if self._error is None:
                        fn, label = arg
                        c0 = time.thread_time() if self.trace is not None else 0.0
                        t0 = time.perf_counter()
                        fn()
                        t1 = time.perf_counter()
                        self.busy_s += t1 - t0
                        if self.trace is not None:
                            self.trace.append((label, t0, t1, time.thread_time() - c0))
                elif kind == "wait":
                    event, count = arg
                    t0 = time.perf_counter()
                    blocked = event._wait_for(count)
                    t1 = time.perf_counter()
                    self.wait_s += t1 - t0
                    if blocked and self.trace is not None:
                        self.trace.append((f"wait {event.name}", t0, t1, 0.0))
                else:  # record
                    event, count = arg
                    event._fire(count)
            except BaseException as e:  # reported by synchronize()
                if self._error is None:
                    self._error = e
            with self._idle:
                self._done += 1
                # Only synchronize waits on this, for the queue to be empty: waking the host at
                # every item (a few hundred a step) would take cycles and the GIL from the
                # other devices' workers. Only the host submits, so _submitted is final by then.
                if self._done == self._submitted:
                    self._idle.notify_all()

    def _put(self, kind, arg):
        self._submitted += 1
        self._queue.put((kind, arg))

    def submit(self, fn, label=None, cores=None):
        """`cores`: run fn on these cores with as many OpenMP threads (other devices lend
        theirs while they are blocked), then return to this stream's own."""
        self._put("run", (fn if cores is None else self._on_cores(fn, cores), label))

    def _on_cores(self, fn, cores):
        # Pinned back to this stream's own cores afterwards, so only where it has been pinned.
        mod, pin = backend(self.device), bool(self._cores) and hasattr(os, "sched_setaffinity")

        def run():
            if pin:
                os.sched_setaffinity(0, cores)
            mod.set_num_threads(len(cores))
            try:
                fn()
            finally:
                mod.set_num_threads(self._threads)
                if pin:
                    os.sched_setaffinity(0, self._cores)
        return run

    def copy(self, dst, src, label=None):
        self._put("run", (lambda: dst.copy_(src), label))

    def record(self, event):
        event.records += 1
        self._put("record", (event, event.records))

    def wait(self, event):
        self._put("wait", (event, event.records))

    def synchronize(self):
        with self._idle:
            while self._done < self._submitted:
                self._idle.wait()
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def close(self):
        self._queue.put(("stop", None))
        if self._thread is not threading.current_thread():  # collected on its own thread
            self._thread.join()


class _DeviceStream:
    """A CUDA (or emulated) stream: work is issued at once and runs asynchronously on it."""

    def __init__(self, device, role):
        self.device, self.role = device, role
        self.busy_s = self.wait_s = 0.0
        self.trace = None  # work is issued asynchronously: nothing to time on the host
        self._mod = backend(device)
        get = self._mod.compute_stream if role == "compute" else self._mod.copy_stream
        self.handle = get(device.index)

    def submit(self, fn, label=None, cores=None):
        # Ops are issued on the device's compute stream; copies use `copy`.
        if self.role != "compute":
            raise AssertionError("only copies are issued on a copy stream")
        fn()

    def copy(self, dst, src, label=None):
        self._mod.copy_device_async(dst._buffer, dst._offset, src._buffer, src._offset,
                                    dst.nbytes, self.handle)

    def upload(self, dst, host):
        """Host array -> device tensor on this stream, not waited for: `host` (pinned memory,
        or the copy makes the host wait) must not change until an event recorded after it
        has fired."""
        self._mod.copy_from_host_async(dst._buffer, dst._offset, host, self.handle)

    def record(self, event):
        event.records += 1
        self._mod.event_record(event._handle, self.handle, self.device.index)

    def wait(self, event):
        if event.device.type != self.device.type:
            raise AssertionError(f"{self.device} cannot wait on an event of {event.device}")
        self._mod.stream_wait_event(self.handle, event._handle, self.device.index)

    def synchronize(self):
        self._mod.stream_synchronize(self.handle, self.device.index)

    def close(self):
        pass


def cpu_core_split(count):
    """The cores this process may use, split into `count` contiguous shares (one share per
    logical CPU device; devices share cores round robin when there are fewer cores)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    if len(cores) < count:
        return [{cores[i % len(cores)]} for i in range(count)]
    return [set(cores[i * len(cores) // count:(i + 1) * len(cores) // count])
            for i in range(count)]


def make_stream(device, role, *, concurrent, cores=None):
    """The stream `role` ("compute" or "copy") of `device`. `concurrent`: several CPU devices
    run at once (one worker thread per stream); else CPU work runs inline."""
    if device.type != "cpu":
        return _DeviceStream(device, role)
    if not concurrent:
        return _InlineStream(device, role)
    threads = len(cores) if cores else 1
    return _ThreadStream(device, role, cores=cores if role == "compute" else None,
                         threads=threads)
