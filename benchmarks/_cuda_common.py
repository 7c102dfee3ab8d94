"""Shared helpers for the CUDA benchmarks: the CUDA module, event timing, the measured peak."""
import statistics

import convnet


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


def open_device(device):
    """(module, device index, on_gpu, measured FMA peak or None, torch or None); None when CUDA
    timings are skipped."""
    mod = cuda_or_none(device)
    if mod is None:
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
