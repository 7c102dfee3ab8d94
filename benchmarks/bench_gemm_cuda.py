"""CUDA SGEMM variants (C = A B, square fp32), timed with CUDA events, against peers in the same
run: cuBLAS through PyTorch when it is importable, and numpy (CPU) always.

    python benchmarks/bench_gemm_cuda.py [--sizes 512 1024 2048 4096] [--repeats 10]

Prints, per size and variant, the median ms, GFLOP/s, % of the GPU's FMA peak measured at the
start of the run, and the ratio to each peer (> 1: convnet faster). Without a GPU it says so and
times nothing."""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _cuda_common import add_device_arg, event_median_ms, open_device  # noqa: E402

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
    opened = open_device(args.device)
    if opened is None:
        return
    mod, dev_index, on_gpu, peak, torch = opened
    print(f"GPU FMA peak (measured now): {f'{peak:.0f} GFLOP/s' if peak else 'n/a'}; timings are medians of "
          f"{args.repeats} event-timed runs")
    print(f"{'size':>6} {'variant':>7} {'ms':>9} {'GFLOP/s':>8} {'%peak':>6} "
          f"{'vs cuBLAS':>9} {'vs numpy':>9}")
    rng = np.random.default_rng(0)
    for s in args.sizes:
        a = rng.standard_normal((s, s), dtype=np.float32)
        b = rng.standard_normal((s, s), dtype=np.float32)
        da, db = convnet.tensor(a, device=args.device), convnet.tensor(b, device=args.device)
        dc = convnet.empty((s, s), device=args.device)
        flops = 2.0 * s ** 3
        t_np = numpy_ms(a, b, max(1, args.repeats // 3))
        t_torch = None
        if torch is not None:
            ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
            tc = torch.empty((s, s), device="cuda")
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            ts = []
            for r in range(args.repeats + 2):
                ev0.record()
                torch.matmul(ta, tb, out=tc)
                ev1.record()
                ev1.synchronize()
                if r >= 2:
                    ts.append(ev0.elapsed_time(ev1))
            t_torch = float(np.median(ts))
        for v in range(ops.sgemm_variant_count(args.device.split(":")[0])):
            if v == 1 and s > 2048:
                continue  # the naive kernel: minutes at this size, and nothing to learn
            ms = event_median_ms(mod, lambda: ops.sgemm(da, db, dc, variant=v), args.repeats,
                                 device=dev_index)
            g = flops / (ms * 1e-3) * 1e-9
            vs_torch = f"{t_torch / ms:>9.2f}" if t_torch is not None else f"{'-':>9}"
            print(f"{s:>6} {v:>7} {ms:>9.3f} {g:>8.0f} {pct(g, peak)} {vs_torch} "
                  f"{t_np / ms:>9.2f}")


if __name__ == "__main__":
    main()
