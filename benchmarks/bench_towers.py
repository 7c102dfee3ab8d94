"""The two-tower AlexNet on two logical CPU devices against the one-device AlexNet, batch 128.

    python benchmarks/bench_towers.py [CONFIG] [--one layers/alexnet.cfg] [--batch 128]
                                      [--size 224] [--warmup 2] [--steps 3] [--rounds 4]

CONFIG is a two-tower net (layers with gpu=0 / gpu=1), by default layers/alexnet-2gpu.cfg. It
runs with --device cpu: cpu:0 and cpu:1, each a worker thread bound to its share of
the cores (one core each on a 2-core machine), single-threaded kernels, the towers concurrent.
The one-device net runs on all the cores as OpenMP threads. After --warmup steps of each net
(the first allocates and faults in every buffer; by thread CPU time the steps after it cost
the same), rounds alternate the two, --steps steps of each (the median of a round's steps is
the round's figure), so each ratio compares steps seconds apart (the machine may be shared:
medians, and the ratio of each round). One step per round made the per-round ratio mostly
noise on a quiet machine (0.86-0.99x in four rounds of one tree). Also reported: the share of each device's step time
spent in transfers (its copy stream busy) and waiting on the other device (its compute stream
blocked on an event), and, from one more step traced task by task (Net.set_tracing), each
device's busy and waiting shares and the events it waited on longest. The tasks that run on
the cores of a device blocked meanwhile (fc8 and the cost, while the other tower waits for
fc8's gradient) are listed first.

By CPU time (what a shared machine's load moves least): every timed step is traced with each
task's CPU seconds, and the towers' step is replayed over its schedule as if each task took
its CPU seconds (the waits where the towers meet included), against the one-device step's
process CPU seconds over its threads; each round prints both ratios. Under load that process
time includes the OpenMP threads spinning at barriers for a descheduled partner, which a quiet
machine has little of: the CPU-time ratio then flatters the towers (run both nets with
OMP_WAIT_POLICY=passive to count work only); the quiet wall-clock ratio is the measure. The
page faults and system CPU of each warm-up step and per timed step of each round tell a round
slowed by first touches of memory (the kernel's time) from one slowed by the kernels.

--passes N (CPU devices): where the towers' CPU time goes pass by pass. N steps each of the
towers as usual, the towers taking turns (a lock around every task: each still runs on its own
core, but never beside another pass; copies, 0.1% of the step, still overlap) and the one-device
net, alternating; per pass, the thread CPU ms per tower core (both towers' tasks of that layer,
over two) in each mode against the one-device net's process CPU ms per thread. Together over
taking turns is what running beside the other tower costs each pass (shared L3 and memory);
taking turns over the one-device net is what the split itself costs.

With a GPU, the same script measures peer-copy GB/s between cuda:0 and cuda:1 (or within one
GPU) and the overlap of a copy with a kernel on the other stream; without one it says so. Then
--device cuda:N times the two nets there: on a machine with one GPU both towers run on it as
two logical devices (each with its own compute and copy streams, the transfers between them
device-to-device copies on the copy streams), which the script prints. A CUDA step returns
before the device finishes, so each timed step ends with net.drain().
"""
import argparse
import collections
import os
import re
import statistics
import sys
import threading
import time

try:
    import resource  # page faults per step (POSIX)
except ImportError:
    resource = None

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)

import convnet  # noqa: E402
from _common import cpu_model  # noqa: E402
from convnet.config import ConfigError, load_config  # noqa: E402
from convnet.net import Net  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOWERS = os.path.join(ROOT, "layers", "alexnet-2gpu.cfg")
ONE = os.path.join(ROOT, "layers", "alexnet.cfg")


def batch(size, n, classes):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, size, size, n)) * 50).astype(np.float32)
    y = (np.arange(n) % classes).astype(np.int32)
    return x, y


def faults():
    """(minor page faults, system CPU seconds) of this process so far ((0, 0) without
    getrusage): a step that first touches its buffers shows both, in the kernel."""
    if resource is None:
        return 0, 0.0
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime


def time_steps(net, x, y, steps, first, on_gpu):
    """Wall seconds of each step, the streams' busy and waiting seconds over them, (CPU
    devices) each step replayed from its tasks' CPU seconds (see replay), and the page faults
    and system CPU seconds per step."""
    before, f0 = net.stream_times(), faults()
    times, replays = [], []
    for i in range(steps):
        net.set_tracing(not on_gpu)
        t0 = time.perf_counter()
        net.train_step(x, y, step=first + i, epoch=0, progress=0)
        net.drain()  # CUDA steps are issued without waiting: time the device's work too
        times.append(time.perf_counter() - t0)
        if not on_gpu:
            replays.append(replay(net, net.trace()))
    net.set_tracing(False)
    after, f1 = net.stream_times(), faults()
    spent = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}
    per_step = ((f1[0] - f0[0]) / steps, (f1[1] - f0[1]) / steps)
    return times, spent, replays, per_step


def traced_step(net, x, y, step):
    """One step of `net` traced: per device, the shares of the step its compute stream ran
    tasks (and of that, on a CPU: a shared machine's other jobs take the rest) and waited on
    events, and the longest waits with the event waited on."""
    net.set_tracing(True)
    t0 = time.perf_counter()
    net.train_step(x, y, step=step, epoch=0, progress=0)
    total = time.perf_counter() - t0
    trace = net.trace()
    net.set_tracing(False)
    print(f"one step traced ({total * 1e3:.0f} ms):")
    for (d, role), rows in trace.items():
        if role != "compute":
            continue
        waits = [(b - a, label[len("wait "):]) for label, a, b, _ in rows
                 if label.startswith("wait ")]
        waited = sum(w for w, _ in waits)
        busy = sum(b - a for _, a, b, _ in rows) - waited
        on_cpu = sum(c for *_, c in rows)
        longest = ", ".join(f"{e} {w * 1e3:.0f} ms" for w, e in sorted(waits, reverse=True)[:4])
        print(f"  {d}: busy {100 * busy / total:.1f}% (on a CPU {100 * on_cpu / total:.1f}%), "
              f"waiting {100 * waited / total:.1f}%"
              + (f" (longest: {longest})" if waits else ""))


def replay(net, trace):
    """A traced step as an unloaded machine would run it: each task taking the CPU seconds its
    thread spent in it, replayed over the schedule (each stream in order, a wait until the
    event's record has run). Returns (the replayed step's seconds, {device: seconds its compute
    stream idles, not counting a wait while it lends its cores}). A one-device net runs inline:
    its tasks' process CPU seconds (the OpenMP team's, barrier spinning included) over its
    threads."""
    if len(net.devices) == 1:
        threads = convnet.device.module_for("cpu").num_threads()
        return sum(c for rows in trace.values() for *_, c in rows) / threads, {}
    cpu_s = {}
    for key, rows in trace.items():
        ran = [(label, c) for label, _, _, c in rows if not label.startswith("wait ")]
        tasks = [t for phase in ("forward", "backward", "update") for t in net.tasks[phase]
                 if (str(t.device), t.role) == key]
        if [t.label for t in tasks] != [label for label, _ in ran]:
            raise AssertionError(f"the trace of {key} is not its schedule")
        cpu_s.update((id(t), c) for t, (_, c) in zip(tasks, ran))
    free, fired, records, idle = {}, {}, {}, {}
    for phase in ("forward", "backward", "update"):
        for t in net.tasks[phase]:
            stream = (t.device, t.role)
            ready = free.get(stream, 0.0)
            start = max([ready] + [fired[(id(e), records[id(e)])] for e in t.waits
                                   if records.get(id(e))])
            if t.role == "compute":
                d = str(t.device)
                idle[d] = idle.get(d, 0.0) + start - ready
                for e in t.helpers if net._lent_cores(t) else ():
                    idle[str(e)] = idle.get(str(e), 0.0) - cpu_s[id(t)]
            free[stream] = start + cpu_s[id(t)]
            for e in t.records:
                records[id(e)] = records.get(id(e), 0) + 1
                fired[(id(e), records[id(e)])] = free[stream]
    return max(free.values()), idle


class TakeTurns:
    """While `on`, the tasks of a multi-device CPU net run one at a time: each stream's tasks
    are wrapped in one lock (switch between steps only)."""

    def __init__(self, net):
        self.on = False
        self._lock = threading.Lock()
        for s in net.streams.values():
            s.submit = self._wrapped(s.submit)

    def _wrapped(self, submit):
        def take_turn(fn, label=None, cores=None):
            def run():
                if not self.on:
                    return fn()
                with self._lock:
                    return fn()
            submit(run, label, cores)
        return take_turn


def pass_name(label):
    """A task's pass with the tower's letter dropped ("bwd conv3a: gradients to other devices"
    -> "bwd conv3", "update fc6b.w1" -> "update fc6.w"): the one-device net's label."""
    kind, _, name = label.split(":")[0].partition(" ")
    name = re.sub(r"[.]w\d+$", ".w", re.sub(r"^(\D+\d+)[a-z]\b", r"\1", name))
    return f"{kind} {name}"


def pass_cpu(net, trace, per):
    """{pass: CPU seconds per core} of one traced step: the tasks' thread CPU seconds summed
    per pass over `per` (the towers: their count; the one-device net: its threads, whose
    team's process CPU each inline task holds)."""
    out = collections.defaultdict(float)
    for rows in trace.values():
        for label, _, _, c in rows:
            if not label.startswith("wait "):
                out[pass_name(label)] += c / per
    return out


def passes_section(towers, one, x, y, steps, first):
    """Prints each pass's CPU ms per core: the towers together, taking turns, the one-device
    net (see the module docstring, --passes), sorted by what running together adds, most first."""
    turns = TakeTurns(towers)
    threads = convnet.device.module_for("cpu").num_threads()
    modes = (("together", towers, False), ("turns", towers, True), ("one", one, False))
    got = {m: [] for m, *_ in modes}
    for i in range(steps):
        for mode, net, on in (modes if i % 2 == 0 else modes[::-1]):
            turns.on = on
            net.set_tracing(True)
            net.train_step(x, y, step=first + i, epoch=0, progress=0)
            net.drain()
            per = len(net.devices) if len(net.devices) > 1 else threads
            got[mode].append(pass_cpu(net, net.trace(), per))
            net.set_tracing(False)
    turns.on = False
    med = {m: {k: statistics.median(s.get(k, 0.0) for s in v) for k in set().union(*v)}
           for m, v in got.items()}
    totals = {m: statistics.median(sum(s.values()) for s in v) for m, v in got.items()}
    print(f"pass by pass, thread CPU ms per core, median of {steps} alternated steps (load "
          f"{load()}): the towers together | taking turns | one device (per thread)")
    rows = sorted(med["together"], key=lambda k: med["turns"].get(k, 0) - med["together"][k])
    for k in rows:
        t, s, o = (1e3 * med[m].get(k, 0.0) for m in ("together", "turns", "one"))
        if max(t, s) >= 5:
            print(f"  {k:14s} {t:7.1f} {s:7.1f} {o:7.1f}   together/turns {t / s:.2f}"
                  + (f", turns/one {s / o:.2f}" if o else ""))
    t, s, o = (1e3 * totals[m] for m in ("together", "turns", "one"))
    print(f"  {'step':14s} {t:7.1f} {s:7.1f} {o:7.1f}   together/turns {t / s:.2f}, "
          f"turns/one {s / o:.2f}, together/one {t / o:.2f}")


def gpu_section():
    if not convnet.cuda.is_available():
        print(f"no GPU: peer-copy GB/s and copy/compute overlap not measured "
              f"({convnet.cuda.unavailable_reason()})")
        return
    mod = convnet.device.module_for("cuda")
    count = mod.device_count()[0]
    a, b = 0, min(1, count - 1)
    peer = mod.enable_peer_access(a, b)
    nbytes = 256 << 20
    src = convnet.empty((nbytes // 4,), device=f"cuda:{a}")
    dst = convnet.empty((nbytes // 4,), device=f"cuda:{b}")
    copy = mod.copy_stream(a)
    compute = mod.compute_stream(a)

    def copies(k=10):
        for _ in range(k):
            mod.copy_device_async(dst._buffer, 0, src._buffer, 0, nbytes, copy)
        mod.stream_synchronize(copy, a)

    m = 4096
    ga, gb, gc = (convnet.empty((m, m), device=f"cuda:{a}") for _ in range(3))

    def gemms(k=10):
        for _ in range(k):
            convnet.ops.sgemm(ga, gb, gc)
        mod.stream_synchronize(compute, a)

    def both():
        for _ in range(10):
            mod.copy_device_async(dst._buffer, 0, src._buffer, 0, nbytes, copy)
            convnet.ops.sgemm(ga, gb, gc)
        mod.stream_synchronize(copy, a)
        mod.stream_synchronize(compute, a)

    for fn in (copies, gemms, both):
        fn()  # warm-up
    tc = statistics.median(timed(copies) for _ in range(3))
    tg = statistics.median(timed(gemms) for _ in range(3))
    tb = statistics.median(timed(both) for _ in range(3))
    overlap = (tc + tg - tb) / min(tc, tg)
    where = f"cuda:{a} -> cuda:{b}" if a != b else f"within cuda:{a} (one GPU)"
    print(f"peer copy {where}, peer access {'on' if peer else 'off (host-staged)'}: "
          f"{10 * nbytes / tc / 1e9:.1f} GB/s; 10 copies {tc * 1e3:.1f} ms, 10 sgemm {m}^3 "
          f"{tg * 1e3:.1f} ms, both on two streams {tb * 1e3:.1f} ms: {100 * overlap:.0f}% of the "
          f"shorter hidden")


def load():
    """The 1-minute load average (the machine may be shared), or '?' where there is none."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def load_range(loads):
    known = sorted(float(v) for v in loads if v != "?")
    return f"{known[0]:.1f}-{known[-1]:.1f}" if known else "?"


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=TOWERS,
                   help="two-tower config (default: layers/alexnet-2gpu.cfg)")
    p.add_argument("--one", default=ONE, help="the one-device equivalent")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each net first")
    p.add_argument("--steps", type=int, default=3, help="timed steps of each net per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--passes", type=int, default=0,
                   help="then N steps each of the towers, the towers taking turns and the "
                        "one-device net: CPU ms pass by pass (CPU devices)")
    p.add_argument("--device", default="cpu",
                   help="cpu (two logical CPU devices against one), or cuda:N: the peer-copy and "
                        "overlap figures first, then both nets on cuda:N (and cuda:N+1)")
    a = p.parse_args()
    towers_cfg = a.config
    cpu = convnet.device.module_for("cpu")
    cores = len(os.sched_getaffinity(0))
    print(f"{cpu_model()}, {cpu.isa()}, {cores} cores; batch {a.batch}, {a.size}x{a.size}, "
          f"{a.warmup} warm-up and {a.steps} timed steps per round, {a.rounds} rounds, "
          f"--device {a.device}")
    on_gpu = not a.device.startswith("cpu")
    if on_gpu:
        gpu_section()
    try:
        towers = Net(load_config(towers_cfg), image_shape=(3, a.size, a.size), device=a.device,
                     batch_size=a.batch)
    except (convnet.DeviceError, ConfigError) as e:  # e.g. one GPU: the towers need two devices
        print(f"two-tower net not timed on {a.device}: {e}")
        return
    one = Net(load_config(a.one), image_shape=(3, a.size, a.size), device=a.device,
              batch_size=a.batch)
    x, y = batch(a.size, a.batch, towers.costs[0].classes)
    where = ", ".join(f"{d} (cores {towers.cores[d]})" for d in towers.cores) if not on_gpu \
        else ", ".join(str(d) for d in towers.devices)
    for note in towers.placement_notes:
        print(f"devices: {note}")
    print(f"two towers: {os.path.relpath(towers_cfg, ROOT)} on {where}"
          f", {towers.total_params:,} parameters; one device: {os.path.relpath(a.one, ROOT)}, "
          f"{one.total_params:,} parameters" + ("" if on_gpu else f", {cpu.num_threads()} threads"))
    if not on_gpu:
        helped = [f"{t.label} on {t.device}" for ts in towers.tasks.values() for t in ts
                  if t.helpers and towers._lent_cores(t)]
        print("run on the cores of a device blocked meanwhile: " + (", ".join(helped) or "none"))
    first_touch = {"two towers": [], "one device": []}
    for i in range(a.warmup):
        for name, net in (("two towers", towers), ("one device", one)):
            f0 = faults()
            net.train_step(x, y, step=i, epoch=0, progress=0)
            net.drain()
            f1 = faults()
            first_touch[name].append(f"{f1[0] - f0[0]} faults, {f1[1] - f0[1]:.2f} s system")
    if a.warmup:
        print("warm-up steps (the first touches the buffers): " + "; ".join(
            f"{name} {', then '.join(v)}" for name, v in first_touch.items()))
    per_step = sum(r["bytes"] for r in towers.transfer_log)
    print(f"transfers per step: {len(towers.transfer_log)} copies, {per_step / 1e6:.1f} MB "
          f"({per_step / a.batch / 1e3:.0f} KB per image)")
    ratios, cpu_ratios, t_all, o_all, loads = [], [], [], [], []
    for r in range(a.rounds):
        tt, spent, rt, ft = time_steps(towers, x, y, a.steps, a.warmup + r * a.steps, on_gpu)
        to, _, ro, fo = time_steps(one, x, y, a.steps, a.warmup + r * a.steps, on_gpu)
        mt, mo = statistics.median(tt), statistics.median(to)
        t_all += tt
        o_all += to
        ratios.append(mo / mt)
        total = sum(tt)
        shares = []  # CPU worker threads only: GPU streams are issued asynchronously
        for d in ([] if on_gpu else towers.cores):
            busy_copy = spent[(d, "copy")][0]
            wait = spent[(d, "compute")][1]
            shares.append(f"{d}: transfers {100 * busy_copy / total:.1f}%, waiting "
                          f"{100 * wait / total:.1f}%")
        print(f"round {r + 1}: two towers {a.batch / mt:.1f} images/s ({mt * 1e3:.0f} ms/step), "
              f"one device {a.batch / mo:.1f} images/s ({mo * 1e3:.0f} ms/step): {mo / mt:.2f}x"
              + "".join("; " + x for x in shares) + f"; load {load()}", flush=True)
        loads.append(load())
        if not on_gpu:  # the same steps by CPU seconds, which load moves least
            ct = statistics.median(s for s, _ in rt)
            co = statistics.median(s for s, _ in ro)
            mid = sorted(rt, key=lambda r: r[0])[len(rt) // 2]  # the round's median step
            idle = ", ".join(f"{d} idles {w * 1e3:.0f} ms" for d, w in mid[1].items())
            cpu_ratios.append(co / ct)
            print(f"  by CPU time: two towers {ct * 1e3:.0f} ms/step replayed ({idle}), one "
                  f"device {co * 1e3:.0f} ms of CPU per thread: {co / ct:.2f}x; page faults "
                  f"per step {ft[0]:.0f} / {fo[0]:.0f}, system CPU {ft[1] * 1e3:.0f} / "
                  f"{fo[1] * 1e3:.0f} ms", flush=True)
    if not on_gpu:
        traced_step(towers, x, y, a.warmup + a.rounds * a.steps)
    mt, mo = statistics.median(t_all), statistics.median(o_all)
    print(f"median over all rounds: two towers {a.batch / mt:.1f} images/s, one device "
          f"{a.batch / mo:.1f} images/s; ratio per round {min(ratios):.2f}-{max(ratios):.2f}x, "
          f"median {statistics.median(ratios):.2f}x; load {load_range(loads)}")
    if cpu_ratios:
        print(f"by CPU time: ratio per round {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}x, "
              f"median {statistics.median(cpu_ratios):.2f}x")
    if a.passes and not on_gpu:
        passes_section(towers, one, x, y, a.passes, a.warmup + a.rounds * a.steps + 1)
    towers.close()
    if not on_gpu:
        gpu_section()


if __name__ == "__main__":
    main()
