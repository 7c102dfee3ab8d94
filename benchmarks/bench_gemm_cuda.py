"""CUDA SGEMM variants (C = A B, square fp32), timed with CUDA events, against peers in the same
run: cuBLAS through PyTorch when it is importable (TF32 off: the like-for-like FP32 peer; and on),
and numpy (CPU) always.

    python benchmarks/bench_gemm_cuda.py [--sizes 512 1024 2048 4096] [--repeats 10] [--json F]

Prints, per size and variant, the median ms, GFLOP/s, % of the GPU's FMA peak measured at the
start of the run and of the FP32 peak computed from SM count and clock, the tile and the waves
variant 0 chose, and the ratio to each peer (> 1: convnet faster). Without a GPU it says so and
times nothing."""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _cuda_common import (add_device_arg, computed_peaks, event_median_ms, open_device,  # noqa: E402
                          set_tf32, torch_event_ms, write_json)

import convnet  # noqa: E402
from convnet import ops  # noqa: E402


def numpy_ms(a, b, repeats):
    c = np.empty((a.shape[0], b.shape[1]), np.float32)
    np.matmul(a, b, out=c)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def pct(gflops, peak):
    return f"{100 * gflops / peak:>5.0f}%" if peak else f"{'-':>6}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--repeats", type=int, default=10)
    add_device_arg(ap)
    args = ap.parse_args()
    opened = open_device(args.device, args.json)
    if opened is None:
        return
    mod, dev_index, on_gpu, peak, torch = opened
    computed = computed_peaks().get("fp32_peak_gflops") if on_gpu else None
    print(f"GPU FMA peak (measured now): {f'{peak:.0f} GFLOP/s' if peak else 'n/a'}; computed FP32 "
          f"peak: {f'{computed:.0f} GFLOP/s' if computed else 'n/a'}; timings are medians of "
          f"{args.repeats} event-timed runs")
    print(f"{'size':>6} {'variant':>7} {'ms':>9} {'GFLOP/s':>8} {'%meas':>6} {'%comp':>6} "
          f"{'vs fp32':>8} {'vs tf32':>8} {'vs numpy':>9}  plan")
    rng = np.random.default_rng(0)
    rows = []
    for s in args.sizes:
        a = rng.standard_normal((s, s), dtype=np.float32)
        b = rng.standard_normal((s, s), dtype=np.float32)
        da, db = convnet.tensor(a, device=args.device), convnet.tensor(b, device=args.device)
        dc = convnet.empty((s, s), device=args.device)
        flops = 2.0 * s ** 3
        t_np = numpy_ms(a, b, max(1, args.repeats // 3))
        t_torch = {}
        if torch is not None:
            ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
            tc = torch.empty((s, s), device="cuda")
            for tf32 in (False, True):
                set_tf32(torch, tf32)
                t_torch[tf32] = torch_event_ms(torch, lambda: torch.matmul(ta, tb, out=tc),
                                               args.repeats)
            set_tf32(torch, False)
        plan = mod.sgemm_plan(s, s, s, dev_index)
        for v in range(ops.sgemm_variant_count(args.device.split(":")[0])):
            if v == 1 and s > 2048:
                continue  # the naive kernel: minutes at this size, and nothing to learn
            ms = event_median_ms(mod, lambda: ops.sgemm(da, db, dc, variant=v), args.repeats,
                                 device=dev_index)
            g = flops / (ms * 1e-3) * 1e-9
            row = {"op": "sgemm", "size": s, "variant": v, "ms": ms, "gflops": g,
                   "vs_torch_fp32": t_torch[False] / ms if t_torch else None,
                   "vs_torch_tf32": t_torch[True] / ms if t_torch else None,
                   "vs_numpy": t_np / ms, "plan": plan if v == 0 else ""}
            rows.append(row)
            ratio = lambda r: f"{r:>8.2f}" if r is not None else f"{'-':>8}"  # noqa: E731
            print(f"{s:>6} {v:>7} {ms:>9.3f} {g:>8.0f} {pct(g, peak)} {pct(g, computed)} "
                  f"{ratio(row['vs_torch_fp32'])} {ratio(row['vs_torch_tf32'])} "
                  f"{t_np / ms:>9.2f}  {row['plan']}")
    write_json(args.json, rows, measured_fma_peak_gflops=peak, computed_fp32_peak_gflops=computed)

if __name__ == "__main__":
    main()
