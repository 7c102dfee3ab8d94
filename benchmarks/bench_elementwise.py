"""Memory-bound ops at AlexNet's shapes (batch 128): GB/s against the machine's copy bandwidth.

    python benchmarks/bench_elementwise.py [--device cpu] [--repeats 15] [--threads N]

First measures copy bandwidth with convnet's own copy (y = x, all threads, 2 x 256 MB buffers,
bytes read + bytes written), then times each op and reports GB/s = (bytes the op must read +
bytes it must write) / median time, and that as % of the copy bandwidth. The dropout (4096 x 128)
and softmax (1000 x 128) buffers fit in cache, so for them a copy of the same size is also
timed ("same-size copy"), the fairer yardstick; dropout is also timed at 4096 x 8192, which does
not fit. The fused softmax + cost op also sums its per-image costs in Python; the "kernel" line
calls the backend directly with preallocated outputs. numpy (one thread) runs the same maths on host
arrays as a peer; PyTorch CPU too when it is importable. On a GPU each timed call is followed by
a device synchronise (wall clock around it).
Timings on shared machines vary by 20-40% between runs: medians, and ratios taken in one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import convnet  # noqa: E402
from convnet import ops, rng as crng  # noqa: E402
from convnet.ops._dispatch import backend_of  # noqa: E402

try:
    import torch  # optional peer, never a dependency
except ImportError:
    torch = None

RELU = (96, 55, 55, 128)   # conv1 output
FC = (4096, 128)           # fc6/fc7 activations (dropout)
CLASSES = (1000, 128)      # fc8 logits (softmax + cost)
FC6_WEIGHTS = 9216 * 4096  # 37.7M floats (the update)


def timer(device):
    """Median seconds of fn() over `repeats` runs after a warm-up."""
    dev = convnet.Device(device)

    def sync():
        if dev.type != "cpu":
            convnet.device.module_for(dev.type).synchronize(dev.index)

    def run(fn, repeats):
        fn()
        sync()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all)")
    args = ap.parse_args()
    if args.threads:
        convnet.device.module_for("cpu").set_num_threads(args.threads)
    dev, reps = args.device, args.repeats
    run = timer(dev)
    rs = np.random.default_rng(0)

    def t(a, dtype=np.float32):
        return convnet.tensor(np.asarray(a, dtype), dev)

    big = 1 << 26
    src, dst = t(np.ones(big)), t(np.zeros(big))
    copy_s = run(lambda: ops.copy_(dst, src), reps)
    copy_bw = 8 * big / copy_s / 1e9
    del src, dst
    threads = convnet.device.module_for("cpu").num_threads()
    print(f"device {dev}, {threads} CPU threads, cpu isa "
          f"{convnet.device.module_for('cpu').isa()}")
    print(f"copy bandwidth (convnet copy_, 2 x 256 MB, read + write): {copy_bw:.1f} GB/s")
    print(f"{'op':38s} {'shape':>18s} {'ms':>8s} {'GB/s':>7s} {'%copy':>6s} "
          f"{'same-size copy GB/s':>20s} {'numpy GB/s':>11s}"
          + (f" {'torch GB/s':>10s}" if torch else ""))

    def same_size_copy(nfloats):
        a, b = t(np.ones(nfloats)), t(np.zeros(nfloats))
        return 8 * nfloats / run(lambda: ops.copy_(b, a), reps) / 1e9

    def report(name, shape, nbytes, fn, np_fn=None, torch_fn=None, small=False):
        s = run(fn, reps)
        gbs = nbytes / s / 1e9
        ss = f"{same_size_copy(int(np.prod(shape))):20.1f}" if small else f"{'':20s}"
        peer = f"{nbytes / run(np_fn, max(3, reps // 3)) / 1e9:11.1f}" if np_fn else f"{'':11s}"
        tp = ""
        if torch:
            tp = f" {nbytes / run(torch_fn, reps) / 1e9:10.1f}" if torch_fn else f" {'':10s}"
        print(f"{name:38s} {'x'.join(map(str, shape)):>18s} {s * 1e3:8.3f} {gbs:7.1f} "
              f"{100 * gbs / copy_bw:5.0f}% {ss} {peer}{tp}")

    # ---- neurons
    n = int(np.prod(RELU))
    xh = rs.standard_normal(n).astype(np.float32)
    x, y, dy, dx = t(xh), t(np.zeros(n)), t(rs.standard_normal(n)), t(np.zeros(n))
    xt = torch.from_numpy(xh) if torch else None
    yt = torch.empty_like(xt) if torch else None
    yh = np.empty_like(xh)
    report("relu fwd", RELU, 8 * n, lambda: ops.neuron_fwd(x, "relu", out=y),
           lambda: np.maximum(xh, 0, out=yh),
           (lambda: torch.clamp_min(xt, 0.0, out=yt)) if torch else None)
    report("relu bwd (reads dy, y)", RELU, 12 * n,
           lambda: ops.neuron_bwd(dy, None, y, "relu", out=dx))
    for kind in ("logistic", "tanh[1.7159,0.6667]", "softrelu", "sqrt"):
        report(f"{kind} fwd", RELU, 8 * n, lambda kind=kind: ops.neuron_fwd(x, kind, out=y))
    ops.neuron_fwd(x, "abs", out=y)  # y >= 0: a valid softrelu / sqrt output
    for kind in ("logistic", "tanh[1.7159,0.6667]", "softrelu"):
        report(f"{kind} bwd (reads dy, y)", RELU, 12 * n,
               lambda kind=kind: ops.neuron_bwd(dy, None, y, kind, out=dx))
    del x, y, dy, dx, xh, yh, xt, yt

    # ---- dropout
    n = int(np.prod(FC))
    xh = rs.standard_normal(n).astype(np.float32)
    x, y, m = t(xh), t(np.zeros(n)), convnet.tensor(np.zeros(n, np.uint8), dev)
    stream = crng.RNG_DROPOUT | 6
    step = [0]

    def drop():
        step[0] += 1
        ops.dropout_fwd(x, 0.5, seed=1, stream=stream, step=step[0], out=y, mask=m)

    xt = torch.from_numpy(xh) if torch else None
    yh = np.empty_like(xh)
    report("dropout fwd (x -> y, mask)", FC, 9 * n, drop,
           lambda: np.multiply(xh, (np.random.random(n) < 0.5) * np.float32(2), out=yh),
           (lambda: torch.nn.functional.dropout(xt, 0.5, True)) if torch else None, small=True)
    report("dropout bwd (dy, mask -> dx)", FC, 9 * n,
           lambda: ops.dropout_bwd(x, m, 0.5, out=y), small=True)
    big_fc = (4096, 8192)
    n = int(np.prod(big_fc))
    x, y = t(rs.standard_normal(n)), t(np.zeros(n))
    m = convnet.tensor(np.zeros(n, np.uint8), dev)
    report("dropout fwd (out of cache)", big_fc, 9 * n, drop)
    del x, y, m

    # ---- softmax + cost
    k, b = CLASSES
    xh = (rs.standard_normal(CLASSES) * 3).astype(np.float32)
    lh = rs.integers(0, k, b).astype(np.int32)
    x, p, lab, g = t(xh), t(np.zeros(CLASSES)), t(lh, np.int32), t(np.zeros(CLASSES))

    def np_softmax():
        e = np.exp(xh - xh.max(0))
        return e / e.sum(0)

    xt = torch.from_numpy(xh) if torch else None
    report("softmax", CLASSES, 8 * k * b, lambda: ops.softmax(x, out=p), np_softmax,
           (lambda: torch.softmax(xt, 0)) if torch else None, small=True)
    report("softmax + cost fwd (probs, sums)", CLASSES, 8 * k * b + 12 * b,
           lambda: ops.softmax_xent_fwd(x, lab, out=p), small=True)
    be = backend_of(x)
    report("softmax + cost fwd (kernel)", CLASSES, 8 * k * b + 12 * b,
           lambda: be.softmax_xent_fwd(x, lab, p), small=True)
    report("softmax + cost bwd", CLASSES, 8 * k * b + 4 * b,
           lambda: ops.softmax_xent_bwd(p, lab, 1.0 / b, out=g), small=True)
    del x, p, lab, g

    # ---- the update
    n = FC6_WEIGHTS
    wh = (rs.standard_normal(n) * 0.01).astype(np.float32)
    gh = rs.standard_normal(n).astype(np.float32)
    w, v, gr = t(wh), t(np.zeros(n)), t(gh)
    if torch:
        wt = torch.from_numpy(wh.copy()).requires_grad_()
        wt.grad = torch.from_numpy(gh)
        opt = torch.optim.SGD([wt], lr=0.01, momentum=0.9, weight_decay=0.0005)
    report("sgd update (fc6 weights)", (9216, 4096), 20 * n,
           lambda: ops.sgd_update(w, v, gr, 0.01, 0.9, 0.0005), None,
           (lambda: opt.step()) if torch else None)


if __name__ == "__main__":
    main()
