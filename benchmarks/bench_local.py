"""The locally-connected layers of layers/cifar-local.cfg (cuda-convnet's 11% CIFAR-10 net) on the
CPU backend: forward, data gradient and weight gradient, at the 8x8 positions convnet's 32x32
CIFAR images give and at the 6x6 of cuda-convnet's 24x24 crops.

    python benchmarks/bench_local.py [--batch 128] [--repeats 5] [--isa avx2|avx512|portable]

Prints ms (median), GFLOP/s (2 x filters x positions x taps x images per pass), % of the FMA peak
(measured at the start and next to each row, the best counting) and the ratio to a peer measured
in the same run (> 1: convnet faster): the same per-position GEMMs as one batched matmul of
operands already laid out for it ((P, N, K) x (P, K, F) and so on; numpy.matmul, or torch.bmm
where torch is importable). The peer does no gathering of windows and no scatter of the data
gradient, which convnet's times include: a floor for what a user's own layer would cost.

Then --steps training steps of the whole net (forward, backward, SGD update of every layer,
through convnet.net.Net, on one batch of generated 32x32 images) and the CPU time per CIFAR-10
epoch (50,000 training images) they imply."""
import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _common import (add_isa_argument, aligned, alternating_times, describe_machine,  # noqa: E402
                     fma_peak, local_peak, run_at_isa)
from bench_conv import print_table, torch  # noqa: E402

import convnet  # noqa: E402
from convnet import ops  # noqa: E402
from convnet.config import load_config  # noqa: E402
from convnet.net import Net  # noqa: E402

CONFIG = os.path.join(os.path.dirname(HERE), "layers", "cifar-local.cfg")

# name: (C, H, W, F, fs, padding, stride): cifar-local's local3 and local4 at 32x32 inputs
# (8x8 positions) and at cuda-convnet's 24x24 crops (6x6).
LOCAL = {
    "local3": (64, 8, 8, 64, 3, 1, 1),
    "local4": (64, 8, 8, 32, 3, 1, 1),
    "local3@24": (64, 6, 6, 64, 3, 1, 1),
    "local4@24": (64, 6, 6, 32, 3, 1, 1),
}


def batched_matmul_peers(p, n, k, f, rng):
    """The per-position GEMMs of the three passes as one batched matmul each."""
    x, w, dy = (rng.standard_normal(s, dtype=np.float32) for s in ((p, n, k), (p, k, f), (p, n, f)))
    if torch is not None:
        tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
        return "torch.bmm", {"fwd": lambda: torch.bmm(tx, tw),
                             "bwd_data": lambda: torch.bmm(tdy, tw.transpose(1, 2)),
                             "bwd_weights": lambda: torch.bmm(tx.transpose(1, 2), tdy)}
    return "np.matmul", {"fwd": lambda: np.matmul(x, w),
                         "bwd_data": lambda: np.matmul(dy, w.transpose(0, 2, 1)),
                         "bwd_weights": lambda: np.matmul(x.transpose(0, 2, 1), dy)}


def time_training(batch, steps):
    """Median seconds per training step of layers/cifar-local.cfg (after one warm-up step)."""
    net = Net(load_config(CONFIG), image_shape=(3, 32, 32), batch_size=batch)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((3, 32, 32, batch), dtype=np.float32)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    times = []
    for step in range(steps + 1):
        t = time.perf_counter()
        net.train_step(images, labels, step=step, epoch=0, progress=0.0)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:]), min(times[1:]), max(times[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", nargs="+", default=list(LOCAL))
    ap.add_argument("--steps", type=int, default=5, help="training steps of the whole net "
                                                          "(0: none)")
    add_isa_argument(ap)
    args = ap.parse_args()
    run_at_isa(args.isa)
    describe_machine(("openblas", "torch") if torch else ("openblas",))
    print(f"batch {args.batch}; medians of {args.repeats}; the table follows the last row",
          flush=True)
    peaks, rows = [fma_peak()], []
    rng = np.random.default_rng(0)
    n = args.batch
    for name in args.layers:
        if name not in LOCAL:
            sys.exit(f"unknown layer {name!r}: {', '.join(LOCAL)}")
        c, h, wd, f, fs, pad, stride = LOCAL[name]
        ho, wo = ops.conv_out_size(h, fs, pad, stride), ops.conv_out_size(wd, fs, pad, stride)
        k = c * fs * fs
        # 64-byte aligned, as the net's tensors are (_common.aligned).
        x = aligned(rng.standard_normal((c, h, wd, n), dtype=np.float32))
        w = aligned(rng.standard_normal((ho, wo, c, fs, fs, f), dtype=np.float32))
        dy = aligned(rng.standard_normal((f, ho, wo, n), dtype=np.float32))
        y, dx, dw = (convnet.empty(s).numpy() for s in (dy.shape, x.shape, w.shape))
        kw = dict(padding=pad, stride=stride)
        ours = {"fwd": lambda: ops.local_fwd(x, w, out=y, **kw),
                "bwd_data": lambda: ops.local_bwd_data(dy, w, x.shape, out=dx, **kw),
                "bwd_weights": lambda: ops.local_bwd_weights(x, dy, fs, out=dw, **kw)}
        peer, peers = batched_matmul_peers(ho * wo, n, k, f, rng)
        flops = 2.0 * f * ho * wo * k * n
        for p, fn in ours.items():
            t, tp = alternating_times([fn, peers[p]], args.repeats)
            rows.append((name, p, flops, t, tp, peer))
            peaks.append(local_peak())
            print(f"  {name} {p}", file=sys.stderr, flush=True)
    print_table(rows, peaks)
    if args.steps:
        med, lo, hi = time_training(n, args.steps)
        epoch = 50_000 / n * med
        print(f"cifar-local training step, batch {n}: {med * 1e3:.0f} ms median of {args.steps} "
              f"({lo * 1e3:.0f}-{hi * 1e3:.0f}), {n / med:.0f} images/s; one CIFAR-10 epoch "
              f"(50,000 images) = {epoch / 60:.1f} min")


if __name__ == "__main__":
    main()
