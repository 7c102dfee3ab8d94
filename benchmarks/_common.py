"""Shared benchmark helpers: timing by median, the machine's measured FMA peak, the CPU model, and
`--isa`, which runs a benchmark on one SIMD level for convnet and its peers alike."""
import json
import os
import statistics
import subprocess
import sys
import time

import convnet

ISAS = ("portable", "avx2", "avx512")
# The peers' own caps, per level (set in the child process before they load): OpenBLAS's kernel
# family, oneDNN's highest ISA (both spellings), ATen's vectorised kernels.
PEER_CAPS = {
    "avx512": {"OPENBLAS_CORETYPE": "SkylakeX", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "DNNL_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"OPENBLAS_CORETYPE": "Haswell", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "portable": {"OPENBLAS_CORETYPE": "Nehalem", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "DNNL_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
}
_CHILD_MARK = "CONVNET_BENCH_ISA_CHILD"


def aligned(a):
    """A 64-byte-aligned copy of numpy array a, as convnet's host tensors are (numpy's own arrays
    start 16 bytes into a cache line: CIFAR conv1's direct data gradient ran 1.8x as long on such
    a dy, AMD Zen 5, AVX-512, one thread)."""
    return convnet.tensor(a).numpy()


def add_isa_argument(ap):
    ap.add_argument("--isa", choices=ISAS, default=None,
                    help="SIMD level for convnet (CONVNET_CPU_ISA) and the peers (OpenBLAS, "
                         "oneDNN, ATen capped through their environment variables); default: "
                         "the best this CPU runs, peers uncapped")


def isa_environment(isa):
    """The environment a benchmark runs in at `isa`: convnet's path forced, the peers capped at the
    same level; OPENBLAS_L2_SIZE always unset (OpenBLAS then sizes its blocks from the CPU). At the
    CPU's own best level the peers are left uncapped, so they pick their best kernels."""
    env = dict(os.environ)
    env.pop("OPENBLAS_L2_SIZE", None)
    cpu = convnet.device.module_for("cpu")
    best = cpu.isa_supported()
    if isa is None:
        env.pop("OPENBLAS_CORETYPE", None)
        return env
    if ISAS.index(isa) > ISAS.index(best):
        print(f"error: --isa {isa}: this CPU runs at most {best}", file=sys.stderr)
        sys.exit(2)
    env["CONVNET_CPU_ISA"] = isa
    for var, value in PEER_CAPS[isa].items():
        if isa == best:
            env.pop(var, None)
        else:
            env[var] = value
    return env


def run_at_isa(isa):
    """Re-runs this benchmark (same arguments) in a child process whose environment caps every
    library at `isa`, and exits with its status; returns at once inside that child."""
    if os.environ.get(_CHILD_MARK):
        return
    env = isa_environment(isa)
    env[_CHILD_MARK] = "1"
    sys.exit(subprocess.run([sys.executable] + sys.argv, env=env).returncode)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def describe_machine(peers=("openblas",)):
    """One header line per side: CPU model, convnet's SIMD path, and each peer's cap."""
    cpu = convnet.device.module_for("cpu")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores, best SIMD path "
          f"{cpu.isa_supported()}); convnet path: {cpu.isa()}, {cpu.num_threads()} threads")
    if "openblas" in peers:
        print(f"numpy/OpenBLAS core type: {os.environ.get('OPENBLAS_CORETYPE') or 'its best'}")
    if "torch" in peers:
        print(f"PyTorch: oneDNN max ISA {os.environ.get('ONEDNN_MAX_CPU_ISA') or 'its best'}, "
              f"ATen {os.environ.get('ATEN_CPU_CAPABILITY') or 'its best'}")


# What the benchmarks time with: elapsed time by default; with --clock thread the calling thread's
# CPU time, which leaves out the time other jobs held the core (on a shared 2-core machine
# wall-clock medians moved by a third from run to run, thread-time ones by a few percent).
_clock = time.perf_counter


def add_clock_argument(ap):
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall: elapsed time (default); thread: the calling thread's CPU time, "
                         "for a shared machine; needs one thread on every side "
                         "(OMP_NUM_THREADS=1), as only the calling thread is timed")


def use_clock(name, threads=None):
    """Times everything after this with `name` ('wall' or 'thread'); 'thread' exits with a message
    unless the CPU backend runs one thread (work on other threads would go uncounted); `threads`:
    the thread count of what is timed, where it is not convnet's CPU backend (a peer's child)."""
    global _clock
    if name == "thread":
        threads = threads or convnet.device.module_for("cpu").num_threads()
        if threads != 1:
            sys.exit(f"--clock thread times the calling thread only: run with OMP_NUM_THREADS=1 "
                     f"(the CPU backend has {threads} threads)")
        _clock = time.thread_time
    else:
        _clock = time.perf_counter


def now():
    """The clock use_clock chose, read now (seconds)."""
    return _clock()


def median_time(fn, repeats=5, warmup=1):
    """Median time of fn() in seconds, by the clock use_clock chose (the machine is shared:
    medians, not minima)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = _clock()
        fn()
        ts.append(_clock() - t)
    return statistics.median(ts)


# The pause before each contender's calls in alternating_times: long enough for the previous
# contender's idle threads to stop spinning. Spinning, they hold a core through the next one's
# call. On the AMD EPYC Zen 5 (two cores, two threads a side, convnet at AVX-512), convnet's OpenMP
# workers spin for about 8 ms after a call (GNU OpenMP's 300,000 rounds of `pause` before it
# sleeps): numpy's SGEMM 1024 (OpenBLAS's Haswell kernel) took 15.6 ms right after a convnet call
# and 8.5-8.9 ms from 8 ms after it. OpenBLAS's threads spin 2^28 cycles (its default
# OPENBLAS_THREAD_TIMEOUT) for 60-100 ms: convnet's SGEMM 1024 took 9.3-16 ms 4-60 ms after a
# numpy call and 4.7-4.9 ms after 100 ms. A PyTorch convolution of 50 ms took 55 ms within 8 ms
# of a convnet call (PyTorch's own workers slowed convnet's next call by no measurable amount).
SETTLE_S = 0.2
# After that pause, the calls of the next contender that come before its timed one, for at least
# this long: one call is not enough for short ones. With a single untimed call, convnet's SGEMM 512
# took 1.47 ms where it takes 1.07 alone (AVX2, Zen 5), and with none 4.9 ms: a core left idle
# for SETTLE_S wakes slowly (the clock, the idle state).
WARM_S = 0.02


def alternating_times(fns, repeats):
    """Each of fns' call times, one per round of one call each: a shared machine's load then
    weighs on every contender alike. With several contenders, each timed call comes right after
    untimed calls of the same fn (WARM_S of them), which start SETTLE_S after the previous
    contender's last call: the timed call runs with its own threads awake and the others' asleep,
    as in a program that uses one library alone."""
    times = [[] for _ in fns]
    if len(fns) == 1:
        fns[0]()  # several contenders warm up before every timed call (below)
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            if len(fns) > 1:
                time.sleep(SETTLE_S)
                warm_until = time.perf_counter() + WARM_S
                fn()
                while time.perf_counter() < warm_until:
                    fn()
            t = _clock()
            fn()
            ts.append(_clock() - t)
    return times


def ratio_quartiles(ours, peer):
    """The quartiles (q1, median, q3) of the per-round ratios peer / ours (> 1: ours faster) of
    two contenders' alternating_times. A round's two calls ran a few seconds apart at most, so the
    spread of their ratios is what the machine's drift does to one ratio: a median a few
    hundredths from 1.0 inside a range that spans 1.0 is a tie on that run, not a loss or a win."""
    ratios = [p / o for o, p in zip(ours, peer)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q1, q2, q3


def ratio_text(ours, peer):
    """'median [q1-q3]' of the per-round ratios peer / ours (ratio_quartiles)."""
    q1, q2, q3 = ratio_quartiles(ours, peer)
    return f"{q2:.2f} [{q1:.2f}-{q3:.2f}]"


def fma_peak(threads=None, isa=None, iters=20_000_000, repeats=5):
    """Measured FP32 FMA peak in GFLOP/s for the CPU backend's SIMD path and thread count (the
    portable path is measured with AVX2 FMAs where the CPU has them: no portable peak exists).
    Benchmarks measure it again (briefly) next to every result: on a shared machine the share of
    the cores a process gets drifts during a run. It starts SETTLE_S after whatever ran before,
    so that no peer's idle threads still spin beside it."""
    time.sleep(SETTLE_S)
    cpu = convnet.device.module_for("cpu")
    isa = isa or ("avx512" if cpu.isa() == "avx512" else "avx2")
    threads = threads or cpu.num_threads()
    if _clock is time.perf_counter:
        return cpu.measure_fma_peak(isa, threads, iters, repeats)
    # Thread time (one thread: use_clock checked): the probe's own FLOPs per iteration, 24 FMAs
    # of 16 lanes or 12 of 8 (csrc/cpu/fma_peak_avx512.cpp, fma_peak_avx2.cpp), over the CPU
    # time the call took.
    flops, best = iters * (24 * 16 if isa == "avx512" else 12 * 8) * 2.0, 0.0
    for _ in range(repeats):
        t = _clock()
        cpu.measure_fma_peak(isa, 1, iters, 1)
        best = max(best, flops / (_clock() - t) * 1e-9)
    return best


def local_peak():
    """A short FMA-peak measurement (about 0.1 s) taken right next to a timing."""
    return fma_peak(iters=5_000_000, repeats=3)


# PyTorch's CPU allocator takes its large tensors straight from glibc's malloc, which by default
# returns them to the system and maps them afresh every step; the peer runs in a child process
# with malloc told to keep them, as a tuned PyTorch install would (jemalloc/tcmalloc).
TORCH_MALLOC = ("glibc.malloc.mmap_threshold=4294967296:"
                "glibc.malloc.trim_threshold=17179869184")


def torch_in_child(script, *args):
    """Runs ``script --torch-only ARGS`` with TORCH_MALLOC; the JSON of its last line of output,
    or None when it failed (no PyTorch)."""
    env = dict(os.environ, GLIBC_TUNABLES=TORCH_MALLOC)
    r = subprocess.run([sys.executable, script, "--torch-only", *map(str, args)], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def torch_alexnet(nn):
    """The paper's net in PyTorch, towers as groups=2 (input 227x227: PyTorch rounds output sizes
    down where cuda-convnet rounds them up, so 227 gives the paper's 55x55 after conv1)."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, 4), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(),
        nn.LocalResponseNorm(5, 1e-4, 0.75, 2), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))
