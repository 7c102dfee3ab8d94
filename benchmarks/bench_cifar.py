"""Training throughput of cuda-convnet's 18% CIFAR-10 net (layers/cifar18.cfg: 3x32x32 images,
conv 5x5 of 32, 32 and 64 filters, max and average 3/2 pools, same-map response normalisation,
one fc layer, softmax + log-loss) on the CPU at batch 128, against the same net in PyTorch,
NCHW and channels-last, in the same run.

    python benchmarks/bench_cifar.py [--batch 128] [--steps 20] [--rounds 3]
                                     [--isa avx2|avx512|portable] [--clock wall|thread]

A training step = forward + backward + SGD update of every layer, through convnet.net.Net for
convnet. Small layers make small GEMMs (m = 32 or 64 filters), where packing, threading and the
per-layer overheads of the host code count as much as the FMAs. Each round times --steps steps
of convnet, then of each PyTorch layout (in a child process with its best CPU settings: all
cores, glibc's malloc told to keep freed memory; with --isa, oneDNN and ATen capped to the same
SIMD level); images/s are medians over the rounds, ratios against PyTorch's faster layout.
PyTorch has no same-map normalisation layer: it is written as x * (min_div + scale/size^2 *
box-sum of x^2 over size x size)^-pow, cuda-convnet's definition, from avg_pool2d.

--clock thread: one thread on each side, each step timed by the calling thread's CPU time
(time.thread_time), which leaves out the time the process waited for a core. On a shared,
oversubscribed machine wall times measure the scheduler as much as the code (a two-thread step
waits for whichever thread was descheduled); this measures the work, at one thread."""
import argparse
import json
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _common import (add_clock_argument, add_isa_argument, describe_machine, fma_peak,  # noqa: E402
                     now, run_at_isa, torch_in_child, use_clock)

import convnet  # noqa: E402
from convnet.config import load_config  # noqa: E402
from convnet.net import Net  # noqa: E402

CONFIG = os.path.join(os.path.dirname(HERE), "layers", "cifar18.cfg")


def convnet_net(batch):
    net = Net(load_config(CONFIG), image_shape=(3, 32, 32), batch_size=batch)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 32, 32, batch)) * 50).astype(np.float32)
    y = (np.arange(batch) % 10).astype(np.int32)
    return net, x, y


def time_convnet(net, x, y, steps, first_step):
    """Seconds per step over `steps` steps (one timing of the whole loop: steps are ~0.1 s)."""
    t0 = now()
    for i in range(steps):
        net.train_step(x, y, step=first_step + i, epoch=0, progress=0)
    return (now() - t0) / steps


def torch_models(batch, steps, clock="wall"):
    """{layout: seconds per step} for PyTorch's version of the net (run in the child)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(1 if clock == "thread" else os.cpu_count())
    use_clock(clock, threads=1)

    class SameMapNorm(nn.Module):
        def __init__(self, size, scale, pow_):
            super().__init__()
            self.size, self.scale, self.pow = size, scale, pow_

        def forward(self, x):
            box = F.avg_pool2d(x * x, self.size, 1, self.size // 2, count_include_pad=True)
            return x * (2.0 + self.scale * box).pow(-self.pow)  # box-mean * size^2 / size^2

    def net():
        # Pools round up (ceil_mode) as cuda-convnet's do: 32 -> 16 -> 8 -> 4.
        return nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            SameMapNorm(3, 5e-5, 0.75),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
            SameMapNorm(3, 5e-5, 0.75),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 10))

    out = {}
    for layout in ("NCHW", "channels-last"):
        model = net()
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.004)
        x = torch.randn(batch, 3, 32, 32)
        y = torch.arange(batch) % 10
        if layout == "channels-last":
            model = model.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        for _ in range(3):
            step()
        t0 = now()
        for _ in range(steps):
            step()
        out[layout] = (now() - t0) / steps
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    add_isa_argument(ap)
    add_clock_argument(ap)
    a = ap.parse_args()
    if a.torch_only:
        try:
            print(json.dumps(torch_models(a.batch, a.steps, a.clock)))
        except ImportError:
            print(json.dumps(None))
        return
    run_at_isa(a.isa)  # from here on, in the child whose libraries loaded with the caps
    if a.clock == "thread":
        convnet.device.module_for("cpu").set_num_threads(1)
    use_clock(a.clock)
    describe_machine(("torch",))
    net, x, y = convnet_net(a.batch)
    for i in range(3):  # warm-up: buffers, caches, the allocator
        net.train_step(x, y, step=i, epoch=0, progress=0)
    ours, peers = [], {}
    for r in range(a.rounds):
        ours.append(time_convnet(net, x, y, a.steps, 3 + r * a.steps))
        res = torch_in_child(__file__, "--batch", a.batch, "--steps", a.steps,
                             "--clock", a.clock)
        for layout, t in (res or {}).items():
            peers.setdefault(layout, []).append(t)
        print(f"  round {r + 1}: convnet {a.batch / ours[-1]:.0f} images/s"
              + "".join(f", PyTorch {k} {a.batch / v[-1]:.0f}" for k, v in peers.items()),
              file=sys.stderr, flush=True)
    t = statistics.median(ours)
    peak = fma_peak()
    net.timings = {}
    time_convnet(net, x, y, a.steps, 10_000)
    per_layer = {k: v / a.steps for k, v in net.timings.items()}
    net.timings = None
    flops = 3 * net.total_flops * a.batch
    what = "thread CPU time, 1 thread" if a.clock == "thread" else "wall time"
    share = f"{100 * flops / t / 1e9 / peak:.0f}% of "
    print(f"convnet CIFAR-18% net training, batch {a.batch}, {what}: {t * 1e3:.1f} ms/step "
          f"(median of {a.rounds} rounds of {a.steps} steps), {a.batch / t:.0f} images/s, "
          f"~{flops / t / 1e9:.0f} GFLOP/s ({share}the FMA peak measured now: {peak:.0f} "
          f"GFLOP/s)")
    total = sum(per_layer.values())
    print(f"{'layer':>10} {'fwd ms':>8} {'bwd ms':>8} {'upd ms':>8} {'share':>6}   "
          f"(profiled step, wall time: {total * 1e3:.1f} ms in layers)")
    for L in net.order:
        f, b, u = (per_layer.get((L.name, k), 0.0) * 1e3 for k in ("fwd", "bwd", "update"))
        if f + b + u > 0.005:
            print(f"{L.name:>10} {f:8.2f} {b:8.2f} {u:8.2f} {(f + b + u) / total / 10:5.1f}%")
    if not peers:
        print("PyTorch: not installed (pip install torch to compare in the same run)")
        return
    med = {k: statistics.median(v) for k, v in peers.items()}
    for layout, tp in med.items():
        print(f"PyTorch {layout}: {tp * 1e3:.1f} ms/step, {a.batch / tp:.0f} images/s; "
              f"convnet / PyTorch = {tp / t:.2f}x")
    best = min(med, key=med.get)
    print(f"convnet / PyTorch's best layout ({best}) = {med[best] / t:.2f}x")


if __name__ == "__main__":
    main()
