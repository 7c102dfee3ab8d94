"""Compiler launcher for nvcc: runs the command, passes its output through, and keeps the
ptxas resource-usage lines (registers, spills, shared memory per kernel and arch) in LOGDIR so
tools/ptxas_report.py can build the report. Usage: nvcc_log.py LOGDIR nvcc ARGS..."""
import hashlib
import os
import subprocess
import sys


def main():
    logdir, cmd = sys.argv[1], sys.argv[2:]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    out = cmd[cmd.index("-o") + 1] if "-o" in cmd else "unknown"
    keep = [l for l in proc.stdout.splitlines() if "ptxas" in l or "Function properties" in l
            or "Compiling entry function" in l or "bytes stack frame" in l or "Used " in l]
    if keep:
        os.makedirs(logdir, exist_ok=True)
        name = os.path.basename(out) + "-" + hashlib.sha1(out.encode()).hexdigest()[:8] + ".log"
        with open(os.path.join(logdir, name), "w") as f:
            f.write("\n".join(keep) + "\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
