"""Shared benchmark helpers: timing by median, the machine's measured FMA peak."""
import statistics
import time

import convnet


def median_time(fn, repeats=5, warmup=1):
    """Median wall time of fn() in seconds (the machine is shared: medians, not minima)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def fma_peak(threads=None, isa=None):
    """Measured FP32 FMA peak in GFLOP/s for the CPU backend's SIMD path and thread count."""
    cpu = convnet.device.module_for("cpu")
    isa = isa or ("avx512" if cpu.isa() == "avx512" else "avx2")
    threads = threads or cpu.num_threads()
    return cpu.measure_fma_peak(isa, threads, 20_000_000, 5)
