"""AlexNet's convolution and fully-connected layers (paper shapes, groups=2 where the paper splits
across GPUs) on the CPU backend: forward, data gradient and weight gradient; with --layers
cifar-conv1 cifar-conv2 cifar-conv3, the three 5x5 layers of the 18% CIFAR-10 net instead
(layers/cifar18.cfg: 32, 32 and 64 filters on 32x32, 16x16 and 8x8 images).

    python benchmarks/bench_conv.py [--batch 128] [--repeats 5] [--layers conv1 conv2 ...]
                                    [--isa avx2|avx512|portable] [--clock wall|thread]
                                    [--channels-last]

Prints ms (median), GFLOP/s, % of the FMA peak (measured at the start and again next to each row;
the best of all of them counts, as contention only lowers a measurement), and the ratio to a peer
measured in the same run (> 1: convnet faster) with the peer's own % of the same peak: PyTorch
CPU's layer when torch is importable (its tensors NCHW, or channels-last with --channels-last, the
layout PyTorch trains the CIFAR net faster in), numpy.matmul for the FC layers; the conv forward
with its bias and ReLU fused (fwd+bias+relu) against the three unfused ops. The 3x3 and 5x5 stride-1 layers
(conv2-conv5) run their forward and data gradient both ways, "wino" (Winograd F(2x2,3x3) or
F(2x2,5x5), variant 5) and "direct" (the implicit GEMM, CONVNET_WINOGRAD=off); their
GFLOP/s count the direct convolution's FLOPs, so the two rows compare as times do. Their weight
gradient too: "wino" variant 6, "direct" what variant 0 runs with CONVNET_WINOGRAD=off (the
implicit GEMM above 128 filters per group, the direct kernel up to 128). The benchmark runs itself
in a child process whose environment holds both sides to one SIMD level with --isa
(CONVNET_CPU_ISA; oneDNN, ATen and OpenBLAS capped by their own variables below the CPU's best
level) and leaves the peers at their best otherwise (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset).
Each row times convnet and the peer alternately, call by call. With OMP_NUM_THREADS=1,
`--clock thread` times by the calling thread's CPU time (every side then runs on that thread),
leaving out the time other jobs on a shared machine held the core."""
import argparse
import contextlib
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)
from _common import (add_clock_argument, add_isa_argument, aligned,  # noqa: E402
                     alternating_times, describe_machine, fma_peak, local_peak, ratio_text,
                     run_at_isa, use_clock)

import convnet  # noqa: E402
from convnet import ops  # noqa: E402

try:
    import torch  # optional peer, never a dependency
except ImportError:
    torch = None

# name: (C, H, W, F, fs, padding, stride, groups); inputs follow the pooling layers (55 -> 27 -> 13)
CONV = {
    "conv1": (3, 224, 224, 96, 11, 0, 4, 1),
    "conv2": (96, 27, 27, 256, 5, 2, 1, 2),
    "conv3": (256, 13, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 13, 384, 3, 1, 1, 2),
    "conv5": (384, 13, 13, 256, 3, 1, 1, 2),
}
# The 18% CIFAR-10 net's (layers/cifar18.cfg), after its 3/2 pools (32 -> 16 -> 8); not run by
# default.
CIFAR_CONV = {
    "cifar-conv1": (3, 32, 32, 32, 5, 2, 1, 1),
    "cifar-conv2": (32, 16, 16, 32, 5, 2, 1, 1),
    "cifar-conv3": (32, 8, 8, 64, 5, 2, 1, 1),
}
FC = {"fc6": (9216, 4096), "fc7": (4096, 4096), "fc8": (4096, 1000)}
WINOGRAD = 5  # the CPU's Winograd variant of conv_fwd and conv_bwd_data (csrc/cpu/winograd.h)
WINOGRAD_WGRAD = 6  # and of conv_bwd_weights


@contextlib.contextmanager
def winograd_off():
    """Variant 0 takes the direct implicit GEMM in the block, wherever Winograd would apply."""
    previous = os.environ.get("CONVNET_WINOGRAD")
    os.environ["CONVNET_WINOGRAD"] = "off"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["CONVNET_WINOGRAD"]
        else:
            os.environ["CONVNET_WINOGRAD"] = previous


def torch_conv_peers(x, w, dy, pad, stride, groups, channels_last=False):
    """PyTorch's NCHW (or channels-last) layer on the same problem (PyTorch rounds output sizes
    down, so the input is zero-extended to give the same output size)."""
    c, h, wd, n = x.shape
    fs = w.shape[1]
    ho, wo = dy.shape[1], dy.shape[2]
    eh, ew = (ho - 1) * stride + fs - h - 2 * pad, (wo - 1) * stride + fs - wd - 2 * pad
    tx = torch.zeros(n, c, h + max(eh, 0), wd + max(ew, 0))
    tx[:, :, :h, :wd] = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 0, 1, 2)))
    tw = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 0, 1, 2)))
    tdy = torch.from_numpy(np.ascontiguousarray(dy.transpose(3, 0, 1, 2)))
    if channels_last:
        tx, tw, tdy = (t.contiguous(memory_format=torch.channels_last) for t in (tx, tw, tdy))
    g = torch.ops.aten.convolution_backward
    fwd = lambda: torch.nn.functional.conv2d(tx, tw, None, stride, pad, 1, groups)  # noqa: E731
    common = (tdy, tx, tw, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], groups)
    bwd_data = lambda: g(*common, [True, False, False])  # noqa: E731
    bwd_weights = lambda: g(*common, [False, True, False])  # noqa: E731
    return {"fwd": fwd, "bwd_data": bwd_data, "bwd_weights": bwd_weights}


def print_table(rows, peaks):
    """Rows (name, pass, flops, times, peer_times, peer) (alternating_times; peer_times None without
    a peer) against the best FMA peak measured anywhere in the run: contention only ever lowers a
    measurement, so the best is the machine's, and dividing by it never flatters a row (a row
    timed in a slow moment shows low, not high). Median times; the ratio is the median of the
    per-round ratios, their quartiles in brackets (_common.ratio_quartiles)."""
    peak = max(peaks)
    print(f"FMA peak: {peak:.0f} GFLOP/s (best of {len(peaks)} measurements through the run, "
          f"lowest {min(peaks):.0f})")
    width = max([6] + [len(r[0]) for r in rows])
    print(f"{'layer':>{width}} {'pass':>15} {'ms':>9} {'GFLOP/s':>8} {'%peak':>6}   "
          f"ratio (> 1: faster)")
    for name, pass_, flops, ts, ts_peer, peer in rows:
        t = statistics.median(ts)
        g = flops / t * 1e-9
        # The peer's own share of the same peak shows what this machine lets a GEMM reach.
        ratio = (f"{ratio_text(ts, ts_peer)} vs {peer} "
                 f"({100 * flops / statistics.median(ts_peer) * 1e-9 / peak:.0f}% of peak)"
                 if ts_peer else "     -")
        print(f"{name:>{width}} {pass_:>15} {t * 1e3:9.2f} {g:8.0f} {100 * g / peak:5.0f}%   "
              f"{ratio}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", nargs="+", default=list(CONV) + list(FC),
                    choices=list(CONV) + list(FC) + list(CIFAR_CONV))
    ap.add_argument("--channels-last", action="store_true",
                    help="PyTorch's conv tensors in channels-last layout (NHWC in memory)")
    add_isa_argument(ap)
    add_clock_argument(ap)
    args = ap.parse_args()
    run_at_isa(args.isa)  # from here on, in the child whose libraries loaded with the caps
    use_clock(args.clock)
    describe_machine(("openblas", "torch") if torch else ("openblas",))
    if torch is not None:
        torch.set_num_threads(convnet.device.module_for("cpu").num_threads())
    print(f"batch {args.batch}; medians of {args.repeats}; the table follows the last row",
          flush=True)
    peaks, rows = [fma_peak()], []

    def report(*row):
        rows.append(row)
        peaks.append(local_peak())
        print(f"  {row[0]} {row[1]}", file=sys.stderr, flush=True)

    rng = np.random.default_rng(0)
    n = args.batch
    for name in args.layers:
        if name in CONV or name in CIFAR_CONV:
            c, h, wd, f, fs, pad, stride, groups = {**CONV, **CIFAR_CONV}[name]
            ho, wo = ops.conv_out_size(h, fs, pad, stride), ops.conv_out_size(wd, fs, pad, stride)
            # Inputs and outputs 64-byte aligned, as the net's tensors are (_common.aligned; the
            # direct forward streams large aligned outputs).
            x = aligned(rng.standard_normal((c, h, wd, n), dtype=np.float32))
            w = aligned(rng.standard_normal((c // groups, fs, fs, f), dtype=np.float32))
            dy = aligned(rng.standard_normal((f, ho, wo, n), dtype=np.float32))
            y, dx, dw = (convnet.empty(s).numpy() for s in (dy.shape, x.shape, w.shape))
            kw = dict(padding=pad, stride=stride, groups=groups)
            flops = 2.0 * f * ho * wo * n * (c // groups) * fs * fs
            ours = {
                "fwd": lambda: ops.conv_fwd(x, w, out=y, **kw),
                "bwd_data": lambda: ops.conv_bwd_data(dy, w, x.shape, out=dx, **kw),
                "bwd_weights": lambda: ops.conv_bwd_weights(x, dy, fs, out=dw, **kw),
            }
            peers = (torch_conv_peers(x, w, dy, pad, stride, groups, args.channels_last)
                     if torch else {})
            # (row label, pass, our call, environment): both algorithms where Winograd applies.
            runs = [(p, p, fn, contextlib.nullcontext) for p, fn in ours.items()]
            if fs in (3, 5) and stride == 1:
                wino = {
                    "fwd": lambda: ops.conv_fwd(x, w, out=y, variant=WINOGRAD, **kw),
                    "bwd_data": lambda: ops.conv_bwd_data(dy, w, x.shape, out=dx,
                                                          variant=WINOGRAD, **kw),
                    "bwd_weights": lambda: ops.conv_bwd_weights(x, dy, fs, out=dw,
                                                                variant=WINOGRAD_WGRAD, **kw),
                }
                runs = [r for p in wino for r in ((f"{p} wino", p, wino[p], contextlib.nullcontext),
                                                  (f"{p} direct", p, ours[p], winograd_off))]
            for label, p, fn, environment in runs:
                with environment():
                    if p in peers:
                        t, tp = alternating_times([fn, peers[p]], args.repeats)
                    else:
                        (t,), tp = alternating_times([fn], args.repeats), None
                report(name, label, flops, t, tp, "torch-cl" if args.channels_last else "torch")
            # The layer's bias and ReLU fused into the forward GEMM's store, against the same
            # three ops run one after the other (two more passes over y).
            b = rng.standard_normal(f, dtype=np.float32)

            def unfused():
                ops.conv_fwd(x, w, out=y, **kw)
                ops.neuron_fwd(ops.bias_fwd(y, b), "relu", out=y)

            report(name, "fwd+bias+relu", flops, *alternating_times(
                [lambda: ops.conv_fwd(x, w, b, relu=True, out=y, **kw), unfused], args.repeats),
                "unfused")
        elif name in FC:
            i, o = FC[name]
            x = aligned(rng.standard_normal((i, n), dtype=np.float32))
            w = aligned(rng.standard_normal((i, o), dtype=np.float32))
            b = rng.standard_normal(o, dtype=np.float32)
            dy = aligned(rng.standard_normal((o, n), dtype=np.float32))
            y, dx, dw = (convnet.empty(s).numpy() for s in (dy.shape, x.shape, w.shape))
            flops = 2.0 * i * o * n
            passes = {
                "fwd": (lambda: ops.fc_fwd(x, w, b, out=y), lambda: np.matmul(w.T, x, out=y)),
                "bwd_data": (lambda: ops.fc_bwd_data(dy, w, out=dx),
                             lambda: np.matmul(w, dy, out=dx)),
                "bwd_weights": (lambda: ops.fc_bwd_weights(x, dy, out=dw),
                                lambda: np.matmul(x, dy.T, out=dw)),
            }
            for p, (fn, peer) in passes.items():
                report(name, p, flops, *alternating_times([fn, peer], args.repeats), "numpy")
    print_table(rows, peaks)


if __name__ == "__main__":
    main()
