"""Shared helpers for the CUDA benchmarks: the CUDA module, event timing, the measured and the
computed peaks, PyTorch as a peer (TF32 off and on), and the JSON the GPU check collects."""
import json
import os
import statistics
import sys

import convnet

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools import gpu_info  # noqa: E402


def cuda_or_none(device):
    """The backend module of `device` ('cuda:N', or 'emu:N' to dry-run a script on the emulator),
    or None after printing why CUDA timings are skipped."""
    if device.startswith("emu"):
        print("emulated device: the timings measure the emulator on the CPU, not a GPU")
        return convnet.device.module_for("emu")
    if not convnet.cuda.is_available():
        print(f"no GPU: CUDA timings skipped ({convnet.cuda.unavailable_reason()})")
        return None
    return convnet.device.module_for("cuda")


def add_device_arg(ap):
    ap.add_argument("--device", default="cuda:0",
                    help="cuda:N, or emu:N to dry-run the script on the emulator (tiny sizes!)")
    ap.add_argument("--json", help="also write the rows here (tools/gpu_check.py reads them)")


def write_json(path, rows, **extra):
    """{'rows': [...], **extra} to `path` when given (rows: one dict per printed line)."""
    if path:
        with open(path, "w") as f:
            json.dump(dict(extra, rows=rows), f, indent=1)


def computed_peaks():
    """FP32 peak (SMs x lanes x 2 x clock) and DRAM bandwidth from the driver, {} without one."""
    info, _ = gpu_info.describe()
    return dict(info["peaks"], name=info["name"], arch=info["arch"]) if info else {}


def torch_event_ms(torch, fn, repeats, warmup=2):
    """Median ms of fn() between two CUDA events on PyTorch's current stream."""
    ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        ev0.record()
        fn()
        ev1.record()
        ev1.synchronize()
        ts.append(ev0.elapsed_time(ev1))
    return statistics.median(ts)


def set_tf32(torch, on):
    """TF32 tensor-core math in cuBLAS and cuDNN: off for a like-for-like FP32 comparison."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def open_device(device, json_path=None):
    """(module, device index, on_gpu, measured FMA peak or None, torch or None); None when CUDA
    timings are skipped, after writing the JSON that says so (for the GPU check's report)."""
    mod = cuda_or_none(device)
    if mod is None:
        write_json(json_path, [], skipped="no GPU")
        return None
    index = int(device.split(":")[1])
    on_gpu = device.startswith("cuda")
    # The emulator's "peak" would take minutes and mean nothing: no % of peak there.
    peak = mod.measure_fma_peak(index, 5) if on_gpu else None
    return mod, index, on_gpu, peak, (torch_cuda() if on_gpu else None)


def event_median_ms(mod, fn, repeats=10, warmup=2, device=0):
    """Median of `repeats` runs of fn() as CUDA events on the device's stream measured them."""
    for _ in range(warmup):
        fn()
    return statistics.median(mod.time_with_events(fn, repeats, device))


def torch_cuda():
    """torch, when it is importable and sees a GPU (an optional peer, never a dependency)."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None
