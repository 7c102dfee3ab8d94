"""SGEMM (C = A B, square fp32) against numpy.matmul (OpenBLAS) in the same run.

    python benchmarks/bench_gemm.py [--sizes 512 1024 2048 4096] [--variant 0] [--repeats 7]
                                    [--isa avx2|avx512|portable] [--threads N]
                                    [--clock wall|thread]

The benchmark runs itself in a child process with OPENBLAS_L2_SIZE unset and, with --isa, both
sides held to that SIMD level (CONVNET_CPU_ISA; OPENBLAS_CORETYPE below the CPU's best level;
without --isa OPENBLAS_CORETYPE is unset, so OpenBLAS picks its best kernel). The two libraries'
timings alternate call by call (a shared machine's load then weighs on both alike); medians.
`--clock thread --threads 1` times each call (and the FMA peak) by the calling thread's CPU time,
which leaves out the time other jobs on a shared machine held the core. Prints the CPU model, the
path on each side, ms, GFLOP/s, % of the measured FMA peak (the best of the measurements taken so
far, one next to each size), and the ratio to numpy (> 1: convnet faster): the median of the
per-round ratios, and in brackets their quartiles (_common.ratio_quartiles)."""
import argparse
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _common import (add_clock_argument, add_isa_argument, alternating_times,  # noqa: E402
                     describe_machine, fma_peak, ratio_text, run_at_isa, use_clock)

from convnet import ops  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 3072, 4096])
    ap.add_argument("--variant", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads on both sides (default: all cores)")
    add_isa_argument(ap)
    add_clock_argument(ap)
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    run_at_isa(args.isa)  # from here on, in the child whose libraries loaded with the caps
    use_clock(args.clock)

    describe_machine(("openblas",))
    peak = fma_peak(threads=args.threads)
    print(f"FMA peak (measured now, {args.threads or 'all'} threads): {peak:.0f} GFLOP/s")
    print(f"{'size':>6} {'convnet ms':>11} {'GFLOP/s':>8} {'%peak':>6} {'numpy ms':>9} "
          f"{'GFLOP/s':>8} {'%peak':>6} {'ratio [quartiles]':>17}")
    rng = np.random.default_rng(0)
    for s in args.sizes:
        a = rng.standard_normal((s, s), dtype=np.float32)
        b = rng.standard_normal((s, s), dtype=np.float32)
        c = np.empty((s, s), np.float32)
        flops = 2.0 * s ** 3
        ts_ours, ts_np = alternating_times(
            [lambda: ops.sgemm(a, b, c, variant=args.variant), lambda: np.matmul(a, b, out=c)],
            args.repeats)
        t_ours, t_np = statistics.median(ts_ours), statistics.median(ts_np)
        g_ours, g_np = flops / t_ours * 1e-9, flops / t_np * 1e-9
        # Re-measured next to every size: the machine may be shared.
        peak = max(peak, fma_peak(threads=args.threads, iters=5_000_000, repeats=3))
        print(f"{s:>6} {t_ours * 1e3:>11.2f} {g_ours:>8.0f} {100 * g_ours / peak:>5.0f}% "
              f"{t_np * 1e3:>9.2f} {g_np:>8.0f} {100 * g_np / peak:>5.0f}% "
              f"{ratio_text(ts_ours, ts_np):>17}",
              flush=True)


if __name__ == "__main__":
    main()
