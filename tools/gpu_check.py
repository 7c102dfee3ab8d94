"""One-command GPU verification: build for the GPU present, test on cuda:0, run compute-sanitizer
over a fixed set of kernel tests, benchmark every kernel family and the AlexNet step against
PyTorch (cuBLAS/cuDNN, TF32 off and on), write OUTDIR/report.md + report.json + raw logs.

  tools/gpu_check.sh OUTDIR [--quick] [--dry] [--budget SECONDS] [--build-dir DIR] [--no-build]

Budgets on one H200-class GPU with 16 cores: full <= 8 min, --quick <= 3 min; every step has its
own timeout (STEP_TIMEOUTS), so a hang costs that step only. Exit status: 1 if the build failed, a
test failed or errored, no cuda:0 test ran, or a sanitizer reported an error; else 0.

Without a GPU (or with --dry) it says so, runs what needs none — arch detection, the build
(_cpu only), the benchmarks' no-GPU path — and writes the report from a FAKE result set, labelled
as such on every line, so the report writer is exercised; it exits 0 unless the build failed.

Run from the repository root's parent or anywhere: paths are taken relative to this file. Uses the
current Python (`pip install --no-build-isolation --no-index`: nothing from the network); the
build tree is build/gpu-check, separate from a development build."""
import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gpu_info  # noqa: E402

# Seconds per step, (full, quick); the sanitizer's is per tool. A step also never runs past the
# run's whole budget (BUDGET): its timeout is cut to what is left, and a step with under
# MIN_STEP seconds left is skipped and reported as such.
STEP_TIMEOUTS = {
    "build": (240, 150),
    "import": (60, 60),
    "tests": (150, 60),
    "sanitizer": (45, 20),
    "bench_gemm": (40, 15),
    "bench_conv": (60, 20),
    "bench_memory": (30, 12),
    "bench_alexnet": (60, 25),
    "bench_towers": (40, 15),
}

BUDGET = (470, 175)  # seconds, (full, quick): the 8 and 3 minutes, less the report
MIN_STEP = 5
# Without a GPU no device time is at stake, and the machine may be a 2-core one: the build gets
# this long instead (a _cpu build from scratch takes ~4-5 min on 2 busy cores).
DRY_BUILD_SECONDS = 1800


class Budget:
    """The run's deadline: timeout(t) = min(t, seconds left)."""

    def __init__(self, seconds):
        self.deadline = time.monotonic() + seconds

    def timeout(self, t):
        return min(t, self.deadline - time.monotonic())


def skipped_step(name, why):
    return {"name": name, "cmd": [], "rc": 0, "seconds": 0.0, "timed_out": False, "log": "",
            "skipped": why}


# The import step: the backends, then an error raised through each built module. A module whose
# error path is broken (on one GPU machine its compiler linked libstdc++ statically and the
# first error message crashed the process) fails here in a second, before the tests.
IMPORT_CHECK = """
import json, convnet
print(json.dumps({'backends': convnet.backends(), 'cuda': convnet.cuda.is_available(),
                  'why': convnet.cuda.unavailable_reason()}))
for dev in ['cpu'] + (['cuda:0'] if convnet.cuda.is_available() else []):
    x = convnet.zeros((2, 3, 3, 2), device=dev)
    try:
        convnet.ops.scale_by_denoms(x, convnet.zeros((2, 3, 3), device=dev), 0.75)
    except ValueError as e:
        print(dev, 'error path:', e)
    else:
        raise SystemExit(dev + ': a shape error was not raised')
"""

# compute-sanitizer's fixed set: small kernel tests, run on cuda:0 only (-m gpu). The first two
# are the --quick set. LRN and pooling run their float4 and scalar paths (aligned and one float
# into the buffers), pooling with ties.
SANITIZER_TESTS = [
    "tests/test_gemm_cuda_variants.py::test_sgemm_variants_leading_dims_alpha_beta",
    "tests/test_conv_cuda_variants.py::test_conv_cuda_variants_accumulate",
    "tests/test_lrn.py::test_vector_and_scalar_paths_bit_identical",
    "tests/test_pool.py::test_vector_and_scalar_paths_bit_identical",
    "tests/test_softmax.py::test_softmax_xent",
]
SANITIZER_TOOLS = ["memcheck", "racecheck", "synccheck", "initcheck"]


# ---------------------------------------------------------------------------------------------
# Running steps with timeouts

def run_step(name, cmd, timeout, log_path, env=None, cwd=ROOT):
    """Runs cmd (a list) in its own process group, output to log_path; kills the group on timeout.
    Returns {name, cmd, rc, seconds, timed_out, log}."""
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env, start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = 124
            log.write(f"\n[gpu_check] {name}: killed after {timeout} s\n")
    return {"name": name, "cmd": cmd, "rc": rc, "seconds": round(time.monotonic() - t0, 1),
            "timed_out": timed_out, "log": os.path.basename(log_path)}


# ---------------------------------------------------------------------------------------------
# Results

def parse_junit(path):
    """Counts of a JUnit XML report, overall and for the cuda:0 tests (ids ending '[cuda...]' or
    '-cuda-'), plus the names of failed tests."""
    root = ET.parse(path).getroot()
    counts = {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
              "cuda_total": 0, "cuda_passed": 0, "failed_names": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        is_cuda = bool(re.search(r"\[(cuda|.*-cuda)(-|\])", case.get("name", "")))
        kinds = {child.tag for child in case}
        counts["total"] += 1
        counts["cuda_total"] += is_cuda
        if "failure" in kinds:
            counts["failed"] += 1
            counts["failed_names"].append(name)
        elif "error" in kinds:
            counts["errors"] += 1
            counts["failed_names"].append(name)
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
            counts["cuda_passed"] += is_cuda
    return counts


def sanitizer_errors(log_text):
    """Error count of a compute-sanitizer run: its summary line, or the number of error blocks."""
    m = re.search(r"ERROR SUMMARY: (\d+) error", log_text)
    if m:
        return int(m.group(1))
    return len(re.findall(r"^========= (Invalid|Race|Barrier|Uninitialized)", log_text, re.M))


def fake_results():
    """A made-up result set with the shape of a real one, for exercising the report writer where
    there is no GPU. Every figure is flagged fake; none comes from a measurement."""
    return {
        "tests": {"total": 3, "passed": 2, "failed": 0, "errors": 0, "skipped": 1,
                  "cuda_total": 2, "cuda_passed": 2, "failed_names": []},
        "sanitizer": [{"tool": t, "rc": 0, "errors": 0, "seconds": 1.0} for t in SANITIZER_TOOLS],
        "benchmarks": {
            "gemm": {"rows": [{"op": "sgemm", "size": 1024, "variant": v, "ms": 1.0 * v,
                               "gflops": 100.0 / v, "vs_torch_fp32": 0.5, "vs_torch_tf32": 0.1}
                              for v in (3, 4)]},
            "memory": {"rows": [{"op": "relu fwd", "gbs": 100.0, "vs_torch": 1.0}]},
            "alexnet": {"rows": [{"impl": "convnet", "images_per_s": 1000.0},
                                 {"impl": "torch fp32", "images_per_s": 2000.0}]},
        },
    }


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table(rows, peak=None):
    """Markdown table of a list of dicts (columns in first-seen order); with `peak`, rows with
    gflops gain a '% fp32 peak' column."""
    if not rows:
        return ["(no rows)"]
    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    if peak and "gflops" in cols:
        cols.insert(cols.index("gflops") + 1, "% fp32 peak")
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        vals = []
        for c in cols:
            if c == "% fp32 peak":
                vals.append(f"{100 * r['gflops'] / peak:.1f}" if r.get("gflops") else "")
            else:
                vals.append(_fmt(r.get(c, "")))
        out.append("| " + " | ".join(vals) + " |")
    return out


def verdict(report):
    """(ok, reasons) from the collected report."""
    reasons = []
    steps = {s["name"]: s for s in report["steps"]}
    if "build" in steps and steps["build"]["rc"] != 0:
        reasons.append(f"build failed (rc {steps['build']['rc']}, log {steps['build']['log']})")
    if "import" in steps and steps["import"]["rc"] != 0:
        reasons.append(f"import or error path failed (rc {steps['import']['rc']}, log "
                       f"{steps['import']['log']})")
    if report["mode"] == "gpu":
        t = report.get("tests")
        if not t:
            reasons.append("no test report")
        else:
            if t["failed"] or t["errors"]:
                reasons.append(f"{t['failed']} tests failed, {t['errors']} errors")
            if t["cuda_passed"] == 0:
                reasons.append("no cuda:0 test passed (did the cuda tests run?)")
        for s in report.get("sanitizer", []):
            if s["rc"] != 0 or s["errors"]:
                reasons.append(f"compute-sanitizer {s['tool']}: {s['errors']} errors, rc {s['rc']}")
    return not reasons, reasons


def write_report(report, outdir):
    """report.json (everything) and report.md (readable); returns the summary lines."""
    ok, reasons = verdict(report)
    report["verdict"] = {"ok": ok, "reasons": reasons}
    with open(os.path.join(outdir, "report.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    fake = report.get("fake_results", False)
    mark = "FAKE " if fake else ""
    dev = report.get("device") or {}
    peak = (dev.get("peaks") or {}).get("fp32_peak_gflops")
    md = [f"# convnet GPU check ({report['mode']}{', quick' if report['quick'] else ''})", ""]
    if fake:
        md += [f"**DRY RUN: no GPU ({report.get('no_gpu_reason', '')}). Every test, sanitizer "
               "and benchmark figure below is FAKE, made up to exercise the report writer.**", ""]
    md += [f"- started {report['started']}, {report['seconds']:.0f} s, host {report['host']}",
           f"- device: {dev.get('name', 'none')}, arch sm_{dev.get('arch', '-')}, "
           f"driver {((dev.get('smi') or {}).get('driver_version')) or '-'}, "
           f"SMs {((dev.get('driver') or {}).get('sm_count')) or '-'}, "
           f"SM clock {((dev.get('driver') or {}).get('clock_khz')) or '-'} kHz",
           f"- FP32 peak (SMs x lanes x 2 x clock): {_fmt(peak) if peak else '-'} GFLOP/s; "
           f"DRAM peak: {_fmt((dev.get('peaks') or {}).get('dram_peak_gbs', '-'))} GB/s",
           f"- verdict: {'PASS' if ok else 'FAIL'}" + ("" if ok else ": " + "; ".join(reasons)),
           "", "## Steps", ""]
    md += table([dict({k: s[k] for k in ("name", "rc", "seconds", "timed_out", "log")},
                      note=s.get("skipped") or s.get("fallback") or "")
                 for s in report["steps"]])
    t = report.get("tests")
    if t:
        md += ["", f"## {mark}Tests (cuda:0)", "",
               f"{t['passed']} passed ({t['cuda_passed']} of them on cuda:0), {t['failed']} "
               f"failed, {t['errors']} errors, {t['skipped']} skipped, of {t['total']}"]
        md += [f"- FAILED {n}" for n in t["failed_names"][:50]]
    if report.get("sanitizer") or report.get("sanitizer_note"):
        md += ["", f"## {mark}compute-sanitizer", ""]
        md += [report["sanitizer_note"]] if report.get("sanitizer_note") else []
        md += table(report["sanitizer"]) if report.get("sanitizer") else []
    for name, bench in report.get("benchmarks", {}).items():
        md += ["", f"## {'FAKE ' if name.startswith('fake ') else ''}Benchmark: {name}", ""]
        note = bench.get("note") or (f"skipped: {bench['skipped']}" if bench.get("skipped") else "")
        if note:
            md += [note, ""]
        md += table(bench.get("rows", []), peak)
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    summary = [f"== convnet GPU check: {'PASS' if ok else 'FAIL'}"
               + (" (DRY RUN, FAKE figures)" if fake else ""),
               f"   device {dev.get('name', 'none')} sm_{dev.get('arch', '-')}",
               *(f"   {s['name']:<20} rc {s['rc']:>3} {s['seconds']:>6.1f} s"
                 + (" TIMEOUT" if s["timed_out"] else "")
                 + (f" skipped: {s['skipped']}" if s.get("skipped") else "")
                 for s in report["steps"])]
    if t:
        summary.append(f"   {mark}tests: {t['passed']} passed ({t['cuda_passed']} cuda), "
                       f"{t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped")
    for name, bench in report.get("benchmarks", {}).items():
        best = [r for r in bench.get("rows", []) if r.get("gflops")]
        if best:
            b = max(best, key=lambda r: r["gflops"])
            pct = f", {100 * b['gflops'] / peak:.0f}% of FP32 peak" if peak else ""
            summary.append(f"   {name}: best {b['gflops']:.0f} GFLOP/s{pct}")
    summary += [f"   ! {r}" for r in reasons]
    summary.append(f"   report: {os.path.join(outdir, 'report.md')}")
    return summary


# ---------------------------------------------------------------------------------------------
# The run

def find_sanitizer():
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    nvcc = shutil.which("nvcc")
    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    if nvcc:
        roots.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for r in roots:
        for p in (os.path.join(r, "bin", "compute-sanitizer"),
                  os.path.join(r, "compute-sanitizer", "compute-sanitizer")):
            if r and os.path.exists(p):
                return p
    return None


def build(outdir, arch, build_dir, timeout):
    """_cpu (+ _cuda for `arch` only), no _emu, all cores, nothing from the network: `pip install
    --no-build-isolation --no-index -e .`; where pip cannot (no setuptools in this Python, say),
    the same CMake build driven directly, the modules written into the source tree."""
    env = dict(os.environ, CONVNET_EMU="OFF", CONVNET_CUDA="ON" if arch else "OFF",
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2), CONVNET_BUILD_DIR=build_dir)
    if arch:
        env["CONVNET_CUDA_ARCHS"] = arch
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
           "--no-deps", "-e", ROOT]
    step = run_step("build", cmd, timeout, os.path.join(outdir, "build.log"), env=env)
    if step["rc"] == 0 or step["timed_out"]:
        return step
    try:
        import pybind11
        cmake_dir = pybind11.get_cmake_dir()
    except ImportError:
        step["fallback"] = "pybind11 is not importable: no CMake fallback"
        return step
    script = (f"cmake -S {ROOT} -B {build_dir} -DCONVNET_CUDA={env['CONVNET_CUDA']} "
              f"-DCONVNET_EMU=OFF -DCONVNET_OUT={os.path.join(ROOT, 'convnet')} "
              f"-DPython_EXECUTABLE={sys.executable} -Dpybind11_DIR={cmake_dir} "
              f"-DCMAKE_BUILD_TYPE=Release {'-G Ninja' if shutil.which('ninja') else ''} "
              f"&& cmake --build {build_dir} --parallel {os.cpu_count() or 2}")
    fallback = run_step("build", ["bash", "-c", script],
                        max(10, timeout - (time.monotonic() - t0)),
                        os.path.join(outdir, "build-cmake.log"), env=env)
    fallback["fallback"] = f"pip failed (rc {step['rc']}, see build.log): built with CMake directly"
    fallback["seconds"] = round(time.monotonic() - t0, 1)
    return fallback


def bench_steps(outdir, quick, device):
    """(step name, benchmark script, arguments, json name) for every benchmark this tree has."""
    py = sys.executable
    steps = [
        ("bench_gemm", "bench_gemm_cuda.py",
         ["--sizes", "2048"] if quick else ["--sizes", "1024", "2048", "4096"]),
        ("bench_conv", "bench_conv_cuda.py",
         ["--layers", "conv2", "conv3", "--no-cpu-peer"] if quick else ["--no-cpu-peer"]),
        ("bench_memory", "bench_memory_cuda.py", ["--repeats", "5" if quick else "20"]),
        ("bench_alexnet", "bench_alexnet_cuda.py", ["--steps", "3" if quick else "10"]),
        ("bench_towers", "bench_towers.py", []),
    ]
    out = []
    for name, script, args in steps:
        path = os.path.join(ROOT, "benchmarks", script)
        js = os.path.join(outdir, name + ".json")
        extra = ["--json", js] if script.endswith("_cuda.py") else []
        if script == "bench_towers.py":
            extra = ["--device", device]
        out.append((name, path, [py, path, *args, *extra, *(
            ["--device", device] if script.endswith("_cuda.py") else [])], js))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--quick", action="store_true", help="smaller test and benchmark sets (<= 3 min)")
    ap.add_argument("--dry", action="store_true", help="act as if there were no GPU")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "gpu-check"),
                    help="CMake build tree (default build/gpu-check)")
    ap.add_argument("--budget", type=float,
                    help="seconds for the whole run instead of 470 (full) / 175 (--quick): a GPU "
                         "available for a fixed time; steps past it are skipped and reported so")
    ap.add_argument("--no-build", action="store_true",
                    help="use the modules already built in this tree (CI's dry run, right after "
                         "its own install)")
    args = ap.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    outdir = os.path.abspath(args.outdir)
    quick = int(args.quick)
    t_start = time.monotonic()

    info, why = (None, "--dry given") if args.dry else gpu_info.describe()
    report = {"mode": "gpu" if info else "dry", "quick": bool(args.quick),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": os.uname().nodename,
              "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "device": info,
              "steps": [], "benchmarks": {}}
    if info:
        print(f"GPU: {info['name']} (sm_{info['arch']}); building _cuda for sm_{info['arch']} only")
    else:
        report["no_gpu_reason"] = why
        print(f"no GPU ({why}): dry run — build (_cpu), arch detection, benchmarks' no-GPU path, "
              "report from FAKE figures; exit 0 unless the build fails")

    seconds = args.budget or BUDGET[quick]
    budget = Budget(seconds if info else DRY_BUILD_SECONDS + seconds)

    def step_or_skip(name, cmd, timeout, log):
        left = budget.timeout(timeout)
        if left < MIN_STEP:
            return skipped_step(name, "out of the run's time budget")
        return run_step(name, cmd, left, log)

    if args.no_build:
        step = skipped_step("build", "--no-build: the modules already built in this tree")
    else:
        step = build(outdir, info["arch"] if info else None, args.build_dir,
                     budget.timeout(STEP_TIMEOUTS["build"][quick] if info else DRY_BUILD_SECONDS))
    report["steps"].append(step)
    if step["rc"] == 0:
        report["steps"].append(step_or_skip(
            "import", [sys.executable, "-c", IMPORT_CHECK],
            STEP_TIMEOUTS["import"][quick], os.path.join(outdir, "import.log")))

    built = step["rc"] == 0
    if info and built:
        junit = os.path.join(outdir, "junit.xml")
        # -v: each test's outcome is in tests.log as it ends, so a step killed at its timeout
        # (no JUnit then) still says which tests passed and which one hung. With pytest-xdist,
        # 8 workers (each its own CUDA context): a test that crashes its worker is reported as
        # failed and the others still run.
        workers = (["-n", str(min(8, os.cpu_count() or 1))]
                   if importlib.util.find_spec("xdist") else [])
        report["steps"].append(step_or_skip(
            "tests", [sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider",
                      *workers, "-m", "gpu and not slow", "--junitxml", junit],
            STEP_TIMEOUTS["tests"][quick], os.path.join(outdir, "tests.log")))
        report["tests"] = parse_junit(junit) if os.path.exists(junit) else None
        report["sanitizer"] = []
        sanitizer = find_sanitizer()
        if sanitizer is None:
            report["sanitizer_note"] = "compute-sanitizer not found: not run"
        for tool in SANITIZER_TOOLS if sanitizer else []:
            tests = SANITIZER_TESTS[:2] if quick else SANITIZER_TESTS
            log = os.path.join(outdir, f"sanitizer-{tool}.log")
            s = step_or_skip(f"sanitizer-{tool}",
                             [sanitizer, "--tool", tool, "--error-exitcode", "3", "--print-limit",
                              "20", sys.executable, "-m", "pytest", "-q", "-x", "-p",
                              "no:cacheprovider", "-m", "gpu and not slow", *tests],
                             STEP_TIMEOUTS["sanitizer"][quick], log)
            report["steps"].append(s)
            if s.get("skipped"):
                continue
            with open(log) as f:
                report["sanitizer"].append({"tool": tool, "rc": s["rc"], "seconds": s["seconds"],
                                            "errors": sanitizer_errors(f.read())})

    if built:
        for name, path, cmd, js in bench_steps(outdir, quick, "cuda:0"):
            if not os.path.exists(path):
                report["benchmarks"][name] = {
                    "note": f"benchmarks/{os.path.basename(path)} is not in this tree: skipped"}
                continue
            s = step_or_skip(name, cmd, STEP_TIMEOUTS[name][quick],
                             os.path.join(outdir, name + ".log"))
            report["steps"].append(s)
            if os.path.exists(js):
                with open(js) as f:
                    report["benchmarks"][name] = json.load(f)
            else:
                report["benchmarks"][name] = {"note": f"no JSON written; see {s['log']}"}

    if not info:
        report["fake_results"] = True
        report.update({k: v for k, v in fake_results().items() if k != "benchmarks"})
        report["benchmarks"] = dict(report["benchmarks"], **{
            "fake " + k: v for k, v in fake_results()["benchmarks"].items()})
    report["seconds"] = time.monotonic() - t_start
    print("\n".join(write_report(report, outdir)))
    ok = report["verdict"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
