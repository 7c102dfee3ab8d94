"""Max pooling with recorded winners against the (x, y) backward, one thread, in one process.

The forward either pools only (old) or also records each window's winner, a byte per output
(new); the backward either finds each winner again by comparing x with y (old) or routes dy
from the recorded byte (new), plain and fused with the input layer's ReLU + bias gradient (what
a pool after a conv with neuron=relu runs in the nets). Both paths are in the same build, so
old and new calls alternate (the order flipped every pair) under the same load, each after
the caches are flushed (as in a net step, where x and y were written long before the
backward). Reports the medians of each and the median of the per-pair ratios old / new.

    OMP_NUM_THREADS=1 python benchmarks/bench_pool_winners.py [--isa avx512|avx2|portable]
                                                              [--pairs 11] [--batch 128]
"""
import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import convnet  # noqa: E402
from convnet import ops  # noqa: E402

from _common import add_isa_argument, describe_machine, now, run_at_isa, use_clock  # noqa: E402

# name, (C, H, W) of the pool's input; all 3x3 windows every 2 pixels
SHAPES = [("CIFAR pool1", (32, 32, 32)), ("AlexNet pool1", (96, 55, 55)),
          ("AlexNet pool2", (256, 27, 27)), ("AlexNet pool5", (256, 13, 13))]
FLUSH_BYTES = 96 << 20  # three times the largest L3 seen on these machines


def pairs_of(old, new, pairs, flush):
    """(old median, new median, median of old/new per pair) in seconds, each call after a
    flush, the order flipped every pair."""
    old(), new()
    t_old, t_new = [], []
    for k in range(pairs):
        for fn, ts in ((old, t_old), (new, t_new))[::1 if k % 2 == 0 else -1]:
            flush()
            t = now()
            fn()
            ts.append(now() - t)
    ratios = [a / b for a, b in zip(t_old, t_new)]
    return statistics.median(t_old), statistics.median(t_new), statistics.median(ratios)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=11)
    ap.add_argument("--batch", type=int, default=128)
    add_isa_argument(ap)
    args = ap.parse_args()
    if args.isa:
        run_at_isa(args.isa)
    use_clock("thread")
    describe_machine(peers=())
    print(f"load average {os.getloadavg()[0]:.1f}; {args.pairs} alternated pairs; ms")
    junk_src = np.ones(FLUSH_BYTES // 4, np.float32)
    junk_dst = np.empty_like(junk_src)

    def flush():
        np.copyto(junk_dst, junk_src)

    rng = np.random.default_rng(0)
    print(f"{'':15} {'fwd old':>8} {'fwd new':>8} {'ratio':>6} | {'bwd old':>8} {'bwd new':>8} "
          f"{'ratio':>6} | {'fused old':>9} {'fused new':>9} {'ratio':>6}")
    for name, (c, h, w) in SHAPES:
        # A ReLU's output: a third exact zeros.
        x = np.maximum(rng.standard_normal((c, h, w, args.batch)) - 0.4, 0).astype(np.float32)
        geo = dict(size=3, stride=2, start=0)
        y = ops.pool_fwd(x, "max", **geo)
        winners = ops.pool_winners(y)
        ops.pool_fwd(x, "max", out=y, winners=winners, **geo)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, db = np.empty_like(x), np.empty(c, np.float32)
        fwd = pairs_of(lambda: ops.pool_fwd(x, "max", out=y, **geo),
                       lambda: ops.pool_fwd(x, "max", out=y, winners=winners, **geo),
                       args.pairs, flush)
        bwd = pairs_of(lambda: ops.pool_bwd(dy, x, y, "max", out=dx, **geo),
                       lambda: ops.pool_bwd(dy, None, None, "max", out=dx, winners=winners,
                                            **geo),
                       args.pairs, flush)
        fused = pairs_of(lambda: ops.pool_bwd(dy, x, y, "max", out=dx, relu_bias=db, **geo),
                         lambda: ops.pool_bwd(dy, None, None, "max", out=dx, relu_bias=db,
                                              winners=winners, **geo),
                         args.pairs, flush)
        cells = []
        for a, b, r in (fwd, bwd, fused):
            cells.append(f"{a * 1e3:8.2f} {b * 1e3:8.2f} {r:5.2f}x")
        print(f"{name:15} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
