"""CUDA convolution variants on AlexNet's five conv layers (cuda-convnet layout, batch 128),
timed with CUDA events: forward, backward-data, backward-weights; peers in the same run are
cuDNN through PyTorch when importable (TF32 off: the like-for-like FP32 peer; and on), and
convnet's CPU backend (one run each, wall clock).

    python benchmarks/bench_conv_cuda.py [--batch 128] [--repeats 5] [--layers conv1 conv2] [--json F]

Prints median ms, GFLOP/s, % of the GPU's FMA peak measured at the start and of the FP32 peak
computed from SM count and clock, ratios to the peers (> 1: convnet faster), and the tile and
split-k count variant 0 chose. Without a GPU it says so and times nothing."""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from _cuda_common import (add_device_arg, computed_peaks, event_median_ms, open_device,  # noqa: E402
                          set_tf32, torch_event_ms, write_json)

import convnet  # noqa: E402
from convnet import ops  # noqa: E402

# name: (C, H=W, F, fs, padding, stride, groups) of the one-GPU AlexNet (cuda-convnet sizes:
# 224 input, 55x55 after conv1 thanks to the round-up rule).
LAYERS = {
    "conv1": (3, 224, 96, 11, 0, 4, 1),
    "conv2": (96, 27, 256, 5, 2, 1, 2),
    "conv3": (256, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 384, 3, 1, 1, 2),
    "conv5": (384, 13, 256, 3, 1, 1, 2),
}


def torch_ms(torch, op, x, w, dy, pad, stride, groups, repeats):
    """cuDNN on the same problem in NCHW; the far edge is zero-padded so that the output size
    follows cuda-convnet's round-up rule."""
    import torch.nn.functional as F
    c, h, wd, n = x.shape
    f, ho, wo = dy.shape[0], dy.shape[1], dy.shape[2]
    fs = w.shape[1]
    extra_h = (ho - 1) * stride + fs - (h + 2 * pad)
    extra_w = (wo - 1) * stride + fs - (wd + 2 * pad)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 0, 1, 2))).cuda()
    tx = F.pad(tx, (pad, pad + max(0, extra_w), pad, pad + max(0, extra_h))).requires_grad_(True)
    tw = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 0, 1, 2))).cuda().requires_grad_(True)
    tdy = torch.from_numpy(np.ascontiguousarray(dy.transpose(3, 0, 1, 2))).cuda()
    g = torch.backends.cudnn
    g.benchmark = True
    if op == "fwd":
        fn = lambda: F.conv2d(tx, tw, stride=stride, groups=groups)  # noqa: E731
    elif op == "bwd_data":
        fn = lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tdy, stride=stride, groups=groups)  # noqa: E731,E501
    else:
        fn = lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tdy, stride=stride, groups=groups)  # noqa: E731,E501
    return torch_event_ms(torch, fn, repeats)


def pct(gflops, peak):
    return f"{100 * gflops / peak:>5.0f}%" if peak else f"{'-':>6}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", nargs="+", default=list(LAYERS))
    ap.add_argument("--no-cpu-peer", action="store_true", help="skip the CPU backend runs")
    add_device_arg(ap)
    args = ap.parse_args()
    opened = open_device(args.device, args.json)
    if opened is None:
        return
    mod, dev_index, on_gpu, peak, torch = opened
    computed = computed_peaks().get("fp32_peak_gflops") if on_gpu else None
    print(f"GPU FMA peak (measured now): {f'{peak:.0f} GFLOP/s' if peak else 'n/a'}; computed FP32 "
          f"peak: {f'{computed:.0f} GFLOP/s' if computed else 'n/a'}; medians of {args.repeats} "
          f"event-timed runs; batch {args.batch}")
    print(f"{'layer':>6} {'op':>12} {'var':>3} {'ms':>9} {'GFLOP/s':>8} {'%meas':>6} {'%comp':>6} "
          f"{'vs fp32':>8} {'vs tf32':>8} {'vs CPU':>8}  plan")
    rows = []
    rng = np.random.default_rng(0)
    n = args.batch
    for name in args.layers:
        c, hw, f, fs, pad, stride, groups = LAYERS[name]
        x = rng.standard_normal((c, hw, hw, n), dtype=np.float32)
        w = (0.01 * rng.standard_normal((c // groups, fs, fs, f))).astype(np.float32)
        ho = convnet.ops.conv_out_size(hw, fs, pad, stride)
        dy = rng.standard_normal((f, ho, ho, n), dtype=np.float32)
        flops = 2.0 * f * ho * ho * n * (c // groups) * fs * fs
        kw = dict(padding=pad, stride=stride, groups=groups)
        dx_, dw_, dy_ = (convnet.tensor(a, device=args.device) for a in (x, w, dy))
        calls = {
            "fwd": lambda v, o: ops.conv_fwd(dx_, dw_, out=o, variant=v, **kw),
            "bwd_data": lambda v, o: ops.conv_bwd_data(dy_, dw_, x.shape, out=o, variant=v, **kw),
            "bwd_weights": lambda v, o: ops.conv_bwd_weights(dx_, dy_, fs, out=o, variant=v,
                                                             **kw),
        }
        cpu_calls = {
            "fwd": lambda: ops.conv_fwd(x, w, **kw),
            "bwd_data": lambda: ops.conv_bwd_data(dy, w, x.shape, **kw),
            "bwd_weights": lambda: ops.conv_bwd_weights(x, dy, fs, **kw),
        }
        outs = {"fwd": dy.shape, "bwd_data": x.shape, "bwd_weights": w.shape}
        for op in calls:
            out = convnet.empty(outs[op], device=args.device)
            t_torch = {}
            if torch is not None:
                for tf32 in (False, True):
                    set_tf32(torch, tf32)
                    t_torch[tf32] = torch_ms(torch, op, x, w, dy, pad, stride, groups, args.repeats)
                set_tf32(torch, False)
            t_cpu = None
            if not args.no_cpu_peer:
                t = time.perf_counter()
                cpu_calls[op]()
                t_cpu = 1e3 * (time.perf_counter() - t)
            kind = args.device.split(":")[0]
            plan = mod.conv_plan("conv_" + op, c, hw, hw, n, f, fs, pad, stride, groups, dev_index)
            for v in range(ops.conv_variant_count("conv_" + op, device=kind)):
                ms = event_median_ms(mod, lambda: calls[op](v, out), args.repeats, warmup=1,
                                     device=dev_index)
                g = flops / (ms * 1e-3) * 1e-9
                row = {"layer": name, "op": op, "variant": v, "ms": ms, "gflops": g,
                       "vs_torch_fp32": t_torch[False] / ms if t_torch else None,
                       "vs_torch_tf32": t_torch[True] / ms if t_torch else None,
                       "vs_cpu": t_cpu / ms if t_cpu is not None else None,
                       "plan": plan if v == 0 else ""}
                rows.append(row)
                ratio = lambda r: f"{r:>8.2f}" if r is not None else f"{'-':>8}"  # noqa: E731
                print(f"{name:>6} {op:>12} {v:>3} {ms:>9.3f} {g:>8.0f} {pct(g, peak)} "
                      f"{pct(g, computed)} {ratio(row['vs_torch_fp32'])} "
                      f"{ratio(row['vs_torch_tf32'])} {ratio(row['vs_cpu'])}  {row['plan']}")
    write_json(args.json, rows, measured_fma_peak_gflops=peak, computed_fp32_peak_gflops=computed,
               batch=n)


if __name__ == "__main__":
    main()
