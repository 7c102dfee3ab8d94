"""AlexNet training step on one GPU (layers/alexnet.cfg: the paper's net with groups=2, 224x224,
batch 128): convnet on cuda:0 against PyTorch's AlexNet on cuDNN/cuBLAS in the same run, with
TF32 off (the like-for-like FP32 peer) and on.

    python benchmarks/bench_alexnet_cuda.py [--batch 128] [--steps 10] [--json F]

A step = forward + backward + SGD update, timed by wall clock around the step and a device
synchronise (the host-to-device copy of the batch included for convnet, whose step takes numpy
arrays; PyTorch's batch already sits on the GPU). Medians over the steps after a warm-up step.
Without a GPU it says so and times nothing."""
import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from _common import torch_alexnet  # noqa: E402
from _cuda_common import (add_device_arg, computed_peaks, open_device, set_tf32,  # noqa: E402
                          write_json)

from convnet.config import load_config  # noqa: E402
from convnet.net import Net  # noqa: E402

CONFIG = os.path.join(os.path.dirname(HERE), "layers", "alexnet.cfg")


def bench_convnet(mod, device, dev_index, batch, size, steps):
    net = Net(load_config(CONFIG), image_shape=(3, size, size), batch_size=batch, device=device)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, size, size, batch)) * 50).astype(np.float32)
    y = (np.arange(batch) % 1000).astype(np.int32)
    times = []
    for i in range(steps + 1):
        mod.synchronize(dev_index)
        t0 = time.perf_counter()
        net.train_step(x, y, step=i, epoch=0, progress=0)
        mod.synchronize(dev_index)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), net


def bench_torch(torch, batch, size, steps, tf32):
    nn = torch.nn
    set_tf32(torch, tf32)
    torch.backends.cudnn.benchmark = True
    model = torch_alexnet(nn).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    # PyTorch rounds output sizes down: 227 gives the paper's 55x55 after conv1.
    tsize = size + 3 if size == 224 else size
    x = torch.randn(batch, 3, tsize, tsize, device="cuda")
    y = torch.arange(batch, device="cuda") % 1000
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= 2:  # cudnn.benchmark picks its algorithms in the first steps
            times.append(time.perf_counter() - t0)
    set_tf32(torch, False)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10)
    add_device_arg(ap)
    a = ap.parse_args()
    opened = open_device(a.device, a.json)
    if opened is None:
        return
    mod, dev_index, on_gpu, peak, torch = opened
    computed = computed_peaks().get("fp32_peak_gflops") if on_gpu else None
    t, net = bench_convnet(mod, a.device, dev_index, a.batch, a.size, a.steps)
    flops = 3 * net.total_flops * a.batch  # forward + backward ~ 3x forward
    rows = [{"impl": "convnet", "ms_per_step": 1e3 * t, "images_per_s": a.batch / t,
             "gflops": flops / t * 1e-9}]
    if torch is not None:
        for tf32 in (False, True):
            tt = bench_torch(torch, a.batch, a.size, a.steps, tf32)
            rows.append({"impl": f"pytorch {'tf32' if tf32 else 'fp32'}", "ms_per_step": 1e3 * tt,
                         "images_per_s": a.batch / tt, "gflops": flops / tt * 1e-9,
                         "convnet_speedup": tt / t})
    print(f"AlexNet training step, batch {a.batch}, {a.size}x{a.size}, {a.device}; FP32 peak "
          f"computed {f'{computed:.0f}' if computed else 'n/a'} GFLOP/s, FMA peak measured "
          f"{f'{peak:.0f}' if peak else 'n/a'}; medians of {a.steps} steps")
    for r in rows:
        pct = f", {100 * r['gflops'] / computed:.0f}% of FP32 peak" if computed else ""
        vs = f", convnet {r['convnet_speedup']:.2f}x" if "convnet_speedup" in r else ""
        print(f"  {r['impl']:<14} {r['ms_per_step']:8.1f} ms/step {r['images_per_s']:8.0f} "
              f"images/s ~{r['gflops']:.0f} GFLOP/s{pct}{vs}")
    if torch is None:
        print("PyTorch with CUDA not importable: no peer in this run")
    write_json(a.json, rows, batch=a.batch, computed_fp32_peak_gflops=computed,
               measured_fma_peak_gflops=peak)


if __name__ == "__main__":
    main()
