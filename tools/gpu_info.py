"""What the GPU is, without building anything: the CUDA driver API through ctypes (the attributes
cudaGetDeviceProperties reports), plus nvidia-smi for the driver version and clocks.

  python tools/gpu_info.py            # prints the JSON of every GPU, or why there is none

Used by tools/gpu_check.py (the arch to build, the peaks of the report) and the CUDA benchmarks
(% of the FP32 peak)."""
import ctypes
import json
import shutil
import subprocess

# FP32 FMA lanes per SM by compute capability (CUDA programming guide, arithmetic throughput
# table): 64 on sm_75 and sm_80, 128 from sm_86 on.
_FP32_LANES = {(7, 5): 64, (8, 0): 64}

# CUdevice_attribute values (cuda.h).
_ATTR = {
    "clock_khz": 13,
    "sm_count": 16,
    "mem_clock_khz": 36,
    "bus_width_bits": 37,
    "l2_bytes": 38,
    "major": 75,
    "minor": 76,
    "smem_per_sm": 81,
    "regs_per_sm": 82,
}

SMI_FIELDS = ["name", "compute_cap", "driver_version", "clocks.max.sm", "clocks.sm",
              "clocks.max.mem", "memory.total", "power.limit", "pci.bus_id"]


def fp32_lanes(major, minor):
    return _FP32_LANES.get((major, minor), 128)


def arch_of(compute_cap):
    """'9.0' -> '90'; '12.0' -> '120'; ValueError for anything else."""
    parts = compute_cap.strip().split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a compute capability: {compute_cap!r}")
    return f"{int(parts[0])}{int(parts[1])}"


def parse_smi(text):
    """Rows of `nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits` as dicts
    (numbers as floats where they parse, '[N/A]' as None)."""
    gpus = []
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(SMI_FIELDS):
            raise ValueError(f"nvidia-smi line has {len(values)} fields, expected "
                             f"{len(SMI_FIELDS)}: {line!r}")
        row = {}
        for key, v in zip(SMI_FIELDS, values):
            if v.startswith("[") or v in ("N/A", ""):
                row[key] = None
            elif key in ("name", "compute_cap", "driver_version", "pci.bus_id"):
                row[key] = v
            else:
                try:
                    row[key] = float(v)
                except ValueError:
                    row[key] = v
        row["arch"] = arch_of(row["compute_cap"]) if row["compute_cap"] else None
        gpus.append(row)
    return gpus


def query_smi(timeout=20):
    """(list of GPUs from nvidia-smi, reason when none)."""
    if not shutil.which("nvidia-smi"):
        return [], "nvidia-smi not found"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=" + ",".join(SMI_FIELDS),
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"nvidia-smi did not answer in {timeout} s"
    if out.returncode != 0:
        return [], f"nvidia-smi failed ({out.returncode}): {(out.stdout + out.stderr).strip()[:200]}"
    gpus = parse_smi(out.stdout)
    return gpus, "" if gpus else "nvidia-smi lists no GPU"


def query_driver():
    """(list of GPUs from the driver API, reason when none). Each: name, major, minor, sm_count,
    clock_khz, mem_clock_khz, bus_width_bits, ..., driver_api_version."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return [], f"no CUDA driver (libcuda.so.1: {e})"
    rc = cuda.cuInit(0)
    if rc != 0:
        return [], f"cuInit failed with CUresult {rc}"
    count, version = ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGetCount(ctypes.byref(count))
    cuda.cuDriverGetVersion(ctypes.byref(version))
    gpus = []
    for i in range(count.value):
        dev = ctypes.c_int()
        cuda.cuDeviceGet(ctypes.byref(dev), i)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        row = {"index": i, "name": name.value.decode(errors="replace"),
               "driver_api_version": version.value}
        for key, attr in _ATTR.items():
            v = ctypes.c_int()
            row[key] = v.value if cuda.cuDeviceGetAttribute(ctypes.byref(v), attr, dev) == 0 \
                else None
        gpus.append(row)
    return gpus, "" if gpus else "the CUDA driver sees no device"


def peaks(gpu):
    """FP32 FMA peak (GFLOP/s) = SMs x FP32 lanes x 2 x SM clock, and DRAM bandwidth (GB/s) =
    2 x memory clock x bus width (double data rate), from driver attributes."""
    out = {}
    if gpu.get("sm_count") and gpu.get("clock_khz") and gpu.get("major") is not None:
        lanes = fp32_lanes(gpu["major"], gpu["minor"])
        out["fp32_lanes_per_sm"] = lanes
        out["fp32_peak_gflops"] = gpu["sm_count"] * lanes * 2 * gpu["clock_khz"] * 1e-6
    if gpu.get("mem_clock_khz") and gpu.get("bus_width_bits"):
        out["dram_peak_gbs"] = 2 * gpu["mem_clock_khz"] * 1e3 * gpu["bus_width_bits"] / 8 * 1e-9
    return out


def describe():
    """Everything known about GPU 0 and the reason when there is none:
    ({'smi': ..., 'driver': ..., 'arch': '90', 'peaks': ...} or None, reason)."""
    smi, smi_why = query_smi()
    drv, drv_why = query_driver()
    if not smi and not drv:
        return None, f"{smi_why}; {drv_why}"
    info = {"smi": smi[0] if smi else None, "driver": drv[0] if drv else None,
            "gpu_count": max(len(smi), len(drv))}
    if drv:
        info["arch"] = f"{drv[0]['major']}{drv[0]['minor']}"
        info["name"] = drv[0]["name"]
        info["peaks"] = peaks(drv[0])
    else:
        info["arch"], info["name"], info["peaks"] = smi[0]["arch"], smi[0]["name"], {}
    return info, ""


if __name__ == "__main__":
    info, why = describe()
    print(json.dumps(info, indent=1) if info else f"no GPU: {why}")
