"""AlexNet training throughput on the CPU (images/s at batch 128) with a per-layer breakdown,
and PyTorch's CPU AlexNet (the same net: paper widths, groups=2, LRN, overlapping pools,
dropout) in the same run when PyTorch is installed.

    python benchmarks/bench_alexnet.py [--batch 128] [--size 224] [--steps 5]
                                       [--isa avx2|avx512|portable]

A training step = forward + backward + SGD update of every layer. Steps after the first (which
warms caches and allocators) are timed; the median is reported, as the machine is shared and
timings vary between runs. PyTorch runs in a child process with its best CPU settings: all
cores as threads, glibc's malloc told to keep freed memory (PyTorch's large per-step allocations
otherwise go back to the OS, halving its speed), channels-last tried alongside the default
layout, and the better of the two reported. With --isa the whole benchmark runs in a child
process holding both sides to that SIMD level (CONVNET_CPU_ISA; oneDNN and ATen capped by their
own variables below the CPU's best level).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _common import (add_isa_argument, describe_machine, fma_peak, run_at_isa,  # noqa: E402
                     torch_alexnet, torch_in_child)

from convnet.config import load_config  # noqa: E402
from convnet.net import Net  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "layers",
                      "alexnet.cfg")


def bench_convnet(batch, size, steps):
    net = Net(load_config(CONFIG), image_shape=(3, size, size), batch_size=batch)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, size, size, batch)) * 50).astype(np.float32)
    y = (np.arange(batch) % 1000).astype(np.int32)
    net.train_step(x, y, step=0, epoch=0, progress=0)
    times = []
    net.timings = {}
    for i in range(steps):
        t0 = time.perf_counter()
        net.train_step(x, y, step=i + 1, epoch=0, progress=0)
        times.append(time.perf_counter() - t0)
    per_layer = {k: v / steps for k, v in net.timings.items()}
    return statistics.median(times), per_layer, net


def bench_torch(batch, size, steps):
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())

    best = None
    # PyTorch rounds output sizes down: 227 gives the paper's 55x55 after conv1.
    tsize = size + 3 if size == 224 else size
    for channels_last in (False, True):
        model = torch_alexnet(nn)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(batch, 3, tsize, tsize)
        y = torch.arange(batch) % 1000
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        loss_fn = nn.CrossEntropyLoss()
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        if best is None or t < best[0]:
            best = (t, "channels-last" if channels_last else "NCHW")
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    add_isa_argument(ap)
    a = ap.parse_args()
    if a.torch_only:
        print(json.dumps(bench_torch(a.batch, a.size, a.steps)))
        return
    run_at_isa(a.isa)  # from here on, in the child whose libraries loaded with the caps
    describe_machine(("torch",))
    t, per_layer, net = bench_convnet(a.batch, a.size, a.steps)
    peak = fma_peak()
    flops = 3 * net.total_flops * a.batch  # forward + backward ~ 3x forward
    print(f"convnet AlexNet training, batch {a.batch}, {a.size}x{a.size}, cpu: "
          f"{t * 1000:.0f} ms/step (median of {a.steps}), {a.batch / t:.1f} images/s, "
          f"~{flops / t / 1e9:.0f} GFLOP/s ({100 * flops / t / 1e9 / peak:.0f}% of the FMA peak "
          f"measured now: {peak:.0f} GFLOP/s)")
    print(f"{'layer':>10} {'fwd ms':>8} {'bwd ms':>8} {'upd ms':>8} {'share':>6}")
    total = sum(per_layer.values())
    for L in net.order:
        f, b, u = (per_layer.get((L.name, k), 0.0) * 1000 for k in ("fwd", "bwd", "update"))
        if f + b + u > 0.05:
            print(f"{L.name:>10} {f:8.1f} {b:8.1f} {u:8.1f} {(f + b + u) / total / 10:5.1f}%")
    torch_res = torch_in_child(__file__, "--batch", a.batch, "--size", a.size, "--steps", a.steps)
    torch_res = None if torch_res is None else tuple(torch_res)
    if torch_res is None:
        print("PyTorch: not installed (pip install torch to compare in the same run)")
    else:
        tt, mode = torch_res
        print(f"PyTorch CPU AlexNet ({mode}): {tt * 1000:.0f} ms/step, {a.batch / tt:.1f} "
              f"images/s; convnet / PyTorch = {tt / t:.2f}x")


if __name__ == "__main__":
    main()
