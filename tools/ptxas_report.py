"""Summarise ptxas resource usage: one line per (kernel, arch) with registers, spill stores/loads,
shared memory and stack frame.

  python tools/ptxas_report.py LOGDIR REPORT            # write the report
  python tools/ptxas_report.py --check REPORT           # exit 1 if any kernel spills

Input lines come from `nvcc --resource-usage` (collected by tools/nvcc_log.py), e.g.
  ptxas info    : Compiling entry function '_Z6kernelPf' for 'sm_80'
  ptxas info    : Function properties for _Z6kernelPf
      0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
  ptxas info    : Used 32 registers, used 0 barriers, 4096 bytes smem, 360 bytes cmem[0]
"""
import glob
import os
import re
import shutil
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
SMEM = re.compile(r"(\d+) bytes smem")


def parse(lines):
    rows, cur = [], None
    for line in lines:
        m = ENTRY.search(line)
        if m:
            cur = {"kernel": m.group(1), "arch": m.group(2), "regs": 0, "stack": 0,
                   "spill_st": 0, "spill_ld": 0, "smem": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = FRAME.search(line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = USED.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            s = SMEM.search(line)
            cur["smem"] = int(s.group(1)) if s else 0
    return rows


def demangle(names):
    if not shutil.which("c++filt") or not names:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    res = out.stdout.splitlines()
    return res if len(res) == len(names) else names


def write_report(logdir, report):
    lines = []
    for path in sorted(glob.glob(os.path.join(logdir, "*.log"))):
        with open(path) as f:
            lines += f.read().splitlines()
    rows = parse(lines)
    names = demangle([r["kernel"] for r in rows])
    width = max([len(n) for n in names] + [6])
    out = [f"{'kernel':<{width}}  {'arch':<7} {'regs':>4} {'spill_st':>8} {'spill_ld':>8} "
           f"{'smem':>6} {'stack':>5}"]
    for r, n in sorted(zip(rows, names), key=lambda t: (t[1], t[0]["arch"])):
        out.append(f"{n:<{width}}  {r['arch']:<7} {r['regs']:>4} {r['spill_st']:>8} "
                   f"{r['spill_ld']:>8} {r['smem']:>6} {r['stack']:>5}")
    spills = sum(1 for r in rows if r["spill_st"] or r["spill_ld"])
    out.append(f"# {len(rows)} kernel builds, {spills} with spills")
    with open(report, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))


def check(report):
    bad = []
    with open(report) as f:
        for line in f:
            parts = line.split()
            if line.startswith("#") or line.startswith("kernel") or len(parts) < 6:
                continue
            if parts[-4] != "0" or parts[-3] != "0":
                bad.append(line.rstrip())
    if bad:
        print("kernels with local-memory spills:\n" + "\n".join(bad))
        return 1
    print(f"{report}: no spills")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    write_report(sys.argv[1], sys.argv[2])
