"""Memory-bound CUDA ops at AlexNet's shapes (batch 128): LRN, max pooling, ReLU, dropout,
softmax, the SGD update and a plain copy, timed with CUDA events, as GB/s of the bytes each op must
read and write, % of the DRAM bandwidth computed from the memory clock and bus width, % of the
copy measured in the same run, and PyTorch's same op in the same run (> 1: convnet faster).

    python benchmarks/bench_memory_cuda.py [--batch 128] [--repeats 20] [--json F]

Without a GPU it says so and times nothing (--device emu:0 dry-runs it with --batch 2)."""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from _cuda_common import (add_device_arg, computed_peaks, event_median_ms, open_device,  # noqa: E402
                          torch_event_ms, write_json)

import convnet  # noqa: E402
from convnet import ops  # noqa: E402

F32 = 4


def cases(dev, n, rng):
    """(name, bytes touched, convnet call, torch call factory or None) per op."""
    def t(shape, scale=1.0):
        return convnet.tensor((scale * rng.standard_normal(shape)).astype(np.float32), device=dev)

    x1 = t((96, 55, 55, n))
    e1 = x1.numpy().size
    y_lrn, d_lrn, dx = (convnet.empty(x1.shape, device=dev) for _ in range(3))
    pooled = ops.pool_fwd(x1, "max", 3, 2)
    e_pool = pooled.numpy().size
    dpool = convnet.empty(x1.shape, device=dev)
    y_relu = convnet.empty(x1.shape, device=dev)
    big = t((4096, 8192 if n >= 128 else 64))  # 4096 features x 8192 columns: out of every cache
    y_big = convnet.empty(big.shape, device=dev)
    mask = convnet.tensor(np.zeros(big.shape, np.uint8), device=dev)
    scores = t((1000, n))
    probs = convnet.empty(scores.shape, device=dev)
    rows = 9216 if n >= 128 else 64  # fc6's weights at full size
    w, v, g = t((rows, 4096)), t((rows, 4096), 0.0), t((rows, 4096))
    ops.lrn_fwd(x1, 5, 0.0005, 0.75, 2.0, out=y_lrn, denoms=d_lrn)

    def torch_lrn(torch):
        tx = torch.randn(n, 96, 55, 55, device="cuda")
        m = torch.nn.LocalResponseNorm(5, 0.0005, 0.75, 2.0)  # alpha/n = scale/size, as ours
        return lambda: m(tx)

    def torch_pool(torch):
        tx = torch.randn(n, 96, 55, 55, device="cuda")
        return lambda: torch.nn.functional.max_pool2d(tx, 3, 2)

    def torch_relu(torch):
        tx = torch.randn(n, 96, 55, 55, device="cuda")
        return lambda: torch.relu(tx)

    def torch_softmax(torch):
        tx = torch.randn(n, 1000, device="cuda")
        return lambda: torch.softmax(tx, 1)

    def torch_sgd(torch):
        pw = torch.nn.Parameter(torch.randn(w.shape, device="cuda"))
        pw.grad = torch.randn(w.shape, device="cuda")
        opt = torch.optim.SGD([pw], lr=0.01, momentum=0.9, weight_decay=0.0005, foreach=True)
        opt.step()
        return opt.step

    return [
        ("copy", 2 * e1 * F32, lambda: ops.copy_(dx, x1), None),
        ("lrn fwd 96x55x55", (1 + 2) * e1 * F32,
         lambda: ops.lrn_fwd(x1, 5, 0.0005, 0.75, 2.0, out=y_lrn, denoms=d_lrn), torch_lrn),
        ("lrn bwd 96x55x55", (4 + 1) * e1 * F32,
         lambda: ops.lrn_bwd(x1, x1, y_lrn, d_lrn, 5, 0.0005, 0.75, out=dx), None),
        ("max pool 3/2 fwd", (e1 + e_pool) * F32, lambda: ops.pool_fwd(x1, "max", 3, 2),
         torch_pool),
        ("max pool 3/2 bwd", (2 * e_pool + 2 * e1) * F32,
         lambda: ops.pool_bwd(pooled, x1, pooled, "max", 3, 2, out=dpool), None),
        ("relu fwd", 2 * e1 * F32, lambda: ops.neuron_fwd(x1, "relu", out=y_relu), torch_relu),
        ("relu bwd", 3 * e1 * F32, lambda: ops.neuron_bwd(x1, x1, y_relu, "relu", out=dx), None),
        (f"dropout fwd {big.shape[0]}x{big.shape[1]}", (2 * F32 + 1) * big.numpy().size,
         lambda: ops.dropout_fwd(big, 0.5, seed=1, stream=0, step=0, out=y_big, mask=mask), None),
        ("softmax 1000xN", 2 * scores.numpy().size * F32, lambda: ops.softmax(scores, out=probs),
         torch_softmax),
        (f"sgd update {w.shape[0]}x{w.shape[1]}", 5 * w.numpy().size * F32,
         lambda: ops.sgd_update(w, v, g, 0.01, 0.9, 0.0005), torch_sgd),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    add_device_arg(ap)
    args = ap.parse_args()
    opened = open_device(args.device, args.json)
    if opened is None:
        return
    mod, dev_index, on_gpu, _, torch = opened
    dram = computed_peaks().get("dram_peak_gbs") if on_gpu else None
    print(f"DRAM bandwidth (computed): {f'{dram:.0f} GB/s' if dram else 'n/a'}; medians of "
          f"{args.repeats} event-timed runs; batch {args.batch}")
    # The launchers' choice for LRN and pooling (every buffer here is a fresh, aligned one).
    vec = args.batch % 4 == 0
    print("LRN and pooling: " + ("4 images a thread (float4 loads and stores)" if vec else
                                 "1 image a thread (the batch is not a multiple of 4)"))
    print(f"{'op':<24} {'ms':>8} {'GB/s':>7} {'%dram':>6} {'%copy':>6} {'vs torch':>9}")
    rows, copy_gbs = [], None
    for name, nbytes, fn, torch_fn in cases(args.device, args.batch, np.random.default_rng(0)):
        ms = event_median_ms(mod, fn, args.repeats, device=dev_index)
        gbs = nbytes / (ms * 1e-3) * 1e-9
        copy_gbs = copy_gbs or gbs
        t_torch = torch_event_ms(torch, torch_fn(torch), args.repeats) if torch and torch_fn \
            else None
        row = {"op": name, "ms": ms, "gbs": gbs, "pct_dram": 100 * gbs / dram if dram else None,
               "pct_copy": 100 * gbs / copy_gbs, "vs_torch": t_torch / ms if t_torch else None}
        rows.append(row)
        vs = f"{row['vs_torch']:.2f}" if t_torch else "-"
        pd = f"{row['pct_dram']:.0f}%" if dram else "-"
        print(f"{name:<24} {ms:>8.3f} {gbs:>7.0f} {pd:>6} {row['pct_copy']:>5.0f}% {vs:>9}")
    write_json(args.json, rows, dram_peak_gbs=dram, batch=args.batch,
               activations_float4=vec)


if __name__ == "__main__":
    main()
