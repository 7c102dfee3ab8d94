"""SGEMM (C = A B, square fp32) against numpy.matmul (OpenBLAS) in the same run.

    python benchmarks/bench_gemm.py [--sizes 512 1024 2048 4096] [--variant 0] [--repeats 5]

OpenBLAS reaches its best only with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (it then picks
its AVX-512 kernel): run this command with both unset for a fair peer, e.g.
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
Prints ms, GFLOP/s, % of the measured FMA peak, and the ratio to numpy (> 1: convnet faster)."""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _common import fma_peak, median_time  # noqa: E402

from convnet import ops  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 3072, 4096])
    ap.add_argument("--variant", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]} is set; numpy may not use its best kernel")
    peak = fma_peak()
    print(f"FMA peak (measured now): {peak:.0f} GFLOP/s")
    print(f"{'size':>6} {'convnet ms':>11} {'GFLOP/s':>8} {'%peak':>6} {'numpy ms':>9} "
          f"{'GFLOP/s':>8} {'%peak':>6} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for s in args.sizes:
        a = rng.standard_normal((s, s), dtype=np.float32)
        b = rng.standard_normal((s, s), dtype=np.float32)
        c = np.empty((s, s), np.float32)
        flops = 2.0 * s ** 3
        t_ours = median_time(lambda: ops.sgemm(a, b, c, variant=args.variant), args.repeats)
        t_np = median_time(lambda: np.matmul(a, b, out=c), args.repeats)
        g_ours, g_np = flops / t_ours * 1e-9, flops / t_np * 1e-9
        print(f"{s:>6} {t_ours * 1e3:>11.2f} {g_ours:>8.0f} {100 * g_ours / peak:>5.0f}% "
              f"{t_np * 1e3:>9.2f} {g_np:>8.0f} {100 * g_np / peak:>5.0f}% {t_np / t_ours:>6.2f}")


if __name__ == "__main__":
    main()
