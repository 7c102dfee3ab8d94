"""Response normalisation and pooling at AlexNet's shapes (batch 128), against the machine's
measured copy bandwidth and, when importable, PyTorch's CPU ops in the same run.

These ops are memory-bound, so each is reported in GB/s of the bytes it must touch (every input
read once, every output written once) and as a percentage of the copy bandwidth measured here:
numpy's copy (one thread) and convnet's own copy (ops.copy_, all threads), counting read + write.

    python benchmarks/bench_lrn_pool.py [--device cpu|cuda:0] [--reps 7] [--batch 128]
                                        [--threads N]

Timings on shared machines are noisy: medians over --reps runs after one warm-up; the copy
bandwidth is measured before and after the ops and the higher figure is the reference.
PyTorch (NCHW, same threads): local_response_norm(size, alpha, beta, k) divides alpha by size
like cuda-convnet, so it is called with alpha = scale; its backward runs through autograd.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import convnet  # noqa: E402
from convnet import ops  # noqa: E402

SCALE, POW, MIN_DIV, SIZE = 1e-4, 0.75, 2.0, 5  # cuda-convnet2's ImageNet LRN parameters

# name, (C, H, W) of the op's input
LRN_SHAPES = [("lrn1", (96, 55, 55)), ("lrn2", (256, 27, 27))]
POOL_SHAPES = [("pool1", (96, 55, 55)), ("pool2", (256, 27, 27)), ("pool5", (256, 13, 13))]


def median_time(fn, reps, sync):
    fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def copy_bandwidth(reps, device, sync):
    n = 96 * 55 * 55 * 128
    rows = []
    if device == "cpu":
        a, b = np.ones(n, np.float32), np.empty(n, np.float32)
        t = median_time(lambda: np.copyto(b, a), reps, sync)
        rows.append(("numpy copyto (1 thread)", 8 * n / t / 1e9))
    src, dst = convnet.full(n, 1.0, device=device), convnet.empty(n, device=device)
    t = median_time(lambda: ops.copy_(dst, src), reps, sync)
    rows.append(("convnet copy_", 8 * n / t / 1e9))
    return rows


def line(name, seconds, nbytes, peak, peer=None):
    gbs = nbytes / seconds / 1e9
    out = f"{name:<16}{seconds * 1e3:9.2f} ms {gbs:8.1f} GB/s {100 * gbs / peak:6.0f}% of copy"
    if peer is not None:
        out += f"   torch {peer * 1e3:9.2f} ms  x{peer / seconds:5.1f}"
    return out


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all)")
    args = ap.parse_args()
    dev, N, reps = args.device, args.batch, args.reps
    cpu = convnet.device.module_for("cpu")
    if args.threads:
        cpu.set_num_threads(args.threads)
    if dev.startswith("cuda"):
        mod, index = convnet.device.module_for("cuda"), convnet.Device(dev).index

        def sync():
            mod.synchronize(index)
    else:
        def sync():
            pass
    print(f"device {dev}" + (f", SIMD path {cpu.isa()}, {cpu.num_threads()} threads"
                             if dev == "cpu" else "") + f", batch {N}, median of {reps}")
    rows = copy_bandwidth(reps, dev, sync)
    results = []  # (name, seconds, bytes, peer seconds): printed once the copy is re-measured
    torch = torch_or_none() if dev == "cpu" else None
    if torch is not None:
        torch.set_num_threads(cpu.num_threads())
        print(f"peer: PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads, NCHW")
    rng = np.random.default_rng(0)

    for name, (C, H, W) in LRN_SHAPES:
        x = convnet.tensor(rng.standard_normal((C, H, W, N), dtype=np.float32), dev)
        dy = convnet.tensor(rng.standard_normal((C, H, W, N), dtype=np.float32), dev)
        y, d, dx = (convnet.empty(x.shape, device=dev) for _ in range(3))
        elems = C * H * W * N
        t_f = median_time(lambda: ops.lrn_fwd(x, SIZE, SCALE, POW, MIN_DIV, out=y, denoms=d),
                          reps, sync)
        t_b = median_time(lambda: ops.lrn_bwd(dy, x, y, d, SIZE, SCALE, POW, out=dx), reps, sync)
        peer_f = peer_b = None
        if torch is not None:
            tx = torch.from_numpy(x.numpy().transpose(3, 0, 1, 2).copy()).requires_grad_()
            tdy = torch.from_numpy(dy.numpy().transpose(3, 0, 1, 2).copy())
            lrn = torch.nn.functional.local_response_norm
            with torch.no_grad():
                peer_f = median_time(lambda: lrn(tx, SIZE, SCALE, POW, MIN_DIV), reps, sync)

            def fwd_bwd():
                tx.grad = None
                lrn(tx, SIZE, SCALE, POW, MIN_DIV).backward(tdy)
            peer_b = median_time(fwd_bwd, reps, sync) - peer_f
        results.append((f"{name} fwd", t_f, 12 * elems, peer_f))
        results.append((f"{name} bwd", t_b, 20 * elems, peer_b))
        del x, dy, y, d, dx

    for name, (C, H, W) in POOL_SHAPES:
        x = convnet.tensor(rng.standard_normal((C, H, W, N), dtype=np.float32), dev)
        shape = ops.pool_output_shape(x.shape, 3, 2)
        y, dx = convnet.empty(shape, device=dev), convnet.empty(x.shape, device=dev)
        dy = convnet.tensor(rng.standard_normal(shape, dtype=np.float32), dev)
        n_in, n_out = C * H * W * N, int(np.prod(shape))
        for mode in ("max", "avg"):
            t_f = median_time(lambda: ops.pool_fwd(x, mode, 3, 2, out=y), reps, sync)
            t_b = median_time(lambda: ops.pool_bwd(dy, x, y, mode, 3, 2, out=dx), reps, sync)
            peer_f = peer_b = None
            if torch is not None:
                tx = torch.from_numpy(x.numpy().transpose(3, 0, 1, 2).copy()).requires_grad_()
                tdy = torch.from_numpy(dy.numpy().transpose(3, 0, 1, 2).copy())
                f = (torch.nn.functional.max_pool2d if mode == "max"
                     else torch.nn.functional.avg_pool2d)
                with torch.no_grad():
                    peer_f = median_time(lambda: f(tx, 3, 2, ceil_mode=True), reps, sync)

                def fwd_bwd():
                    tx.grad = None
                    f(tx, 3, 2, ceil_mode=True).backward(tdy)
                peer_b = median_time(fwd_bwd, reps, sync) - peer_f
            bwd_bytes = 4 * (2 * n_out + 2 * n_in) if mode == "max" else 4 * (n_out + n_in)
            results.append((f"{name} {mode} fwd", t_f, 4 * (n_in + n_out), peer_f))
            results.append((f"{name} {mode} bwd", t_b, bwd_bytes, peer_b))
        del x, y, dx, dy

    rows += copy_bandwidth(reps, dev, sync)
    for what, gbs in rows:
        print(f"copy: {what:<26}{gbs:8.1f} GB/s (read + write)")
    peak = max(g for _, g in rows)
    print(f"{'op (bytes: inputs read once, outputs written once)':<52}"
          f"  vs {peak:.1f} GB/s copy")
    for name, seconds, nbytes, peer in results:
        print(line(name, seconds, nbytes, peak, peer))


if __name__ == "__main__":
    main()
