"""The GPU check's pieces that need no GPU (tools/gpu_check.py, gpu_info.py, kernel_report.py):
arch detection from nvidia-smi output, peaks from driver attributes, occupancy arithmetic, the
SASS main-loop mix, step timeouts, JUnit and sanitizer parsing, the verdict and the report writer,
and a whole dry run with the build stubbed out."""
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))
import gpu_check  # noqa: E402
import gpu_info  # noqa: E402
import kernel_report  # noqa: E402

SMI_H200 = "NVIDIA H200, 9.0, 570.124.06, 1980, 345, 3201, 143771, 700.00, 00000000:19:00.0\n"


def test_parse_smi_and_arch():
    (gpu,) = gpu_info.parse_smi(SMI_H200)
    assert gpu["name"] == "NVIDIA H200" and gpu["arch"] == "90"
    assert gpu["driver_version"] == "570.124.06" and gpu["clocks.max.sm"] == 1980.0
    two = gpu_info.parse_smi(SMI_H200 + SMI_H200.replace("9.0", "8.6").replace("[N/A]", "x"))
    assert [g["arch"] for g in two] == ["90", "86"]
    assert gpu_info.parse_smi("A100, 8.0, 535.1, [N/A], 210, 1593, 40960, 400, 0:1\n")[0][
        "clocks.max.sm"] is None
    assert gpu_info.arch_of("12.0") == "120" and gpu_info.arch_of(" 7.5 ") == "75"
    for bad in ("9", "9.x", ""):
        with pytest.raises(ValueError):
            gpu_info.arch_of(bad)
    with pytest.raises(ValueError, match="fields"):
        gpu_info.parse_smi("NVIDIA H200, 9.0\n")


def test_peaks_from_driver_attributes():
    h100 = {"sm_count": 132, "clock_khz": 1980000, "major": 9, "minor": 0,
            "mem_clock_khz": 2619000, "bus_width_bits": 5120}
    p = gpu_info.peaks(h100)
    assert p["fp32_lanes_per_sm"] == 128
    assert p["fp32_peak_gflops"] == pytest.approx(132 * 128 * 2 * 1.98, rel=1e-9)  # ~66.9 TFLOP/s
    assert p["dram_peak_gbs"] == pytest.approx(3352.3, rel=1e-3)  # H100 SXM: 3.35 TB/s
    a100 = {"sm_count": 108, "clock_khz": 1410000, "major": 8, "minor": 0}
    assert gpu_info.peaks(a100)["fp32_peak_gflops"] == pytest.approx(19491.8, rel=1e-4)  # 19.5
    assert gpu_info.peaks({"sm_count": None}) == {}


def test_occupancy():
    # 153 registers at 256 threads: 153*32 -> 4992 per warp (units of 256) -> 13 warps -> 1 block.
    assert kernel_report.occupancy(153, 8448, "sm_90") == (1, "regs")
    assert kernel_report.occupancy(128, 8448, "sm_90") == (2, "regs")
    assert kernel_report.occupancy(128, 8448, "sm_80") == (2, "regs")
    assert kernel_report.occupancy(32, 0, "sm_90") == (8, "threads")
    # Shared memory: 48 KB + 1 KB reserved per block -> 4 blocks in 228 KB, 3 in 164 KB.
    assert kernel_report.occupancy(32, 48 * 1024, "sm_90") == (4, "smem")
    assert kernel_report.occupancy(32, 48 * 1024, "sm_80") == (3, "smem")
    assert kernel_report.occupancy(32, 0, "sm_99") == (None, "unknown arch")


SASS = """
        Function : _Z6kernelPf
        .headerflags    @"EF_CUDA_SM90"
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDS.128 R4, [R2] ;
        /*0020*/                   FFMA R8, R4, R5, R8 ;
        /*0030*/                   FFMA R9, R4, R6, R9 ;
        /*0040*/                   IADD3 R2, R2, 0x10, RZ ;
        /*0050*/                   IMAD.WIDE R10, R2, 0x4, R12 ;
        /*0060*/                   NOP ;
        /*0070*/               @P0 BRA `(.L_x_0) ;
        /*0080*/                   FFMA R9, R4, R6, R9 ;
        /*0090*/                   EXIT ;
        Function : _Z5outerPf
        /*0000*/                   FFMA R1, R2, R3, R1 ;
        /*0010*/                   FFMA R1, R2, R3, R1 ;
        /*0020*/               @P1 BRA P3, 0x10 ;
        /*0030*/                   FFMA R1, R2, R3, R1 ;
        /*0040*/               @P0 BRA 0x0 ;
        /*0050*/                   BRA 0x60 ;
        /*0060*/                   EXIT ;
        Function : _Z4copyPf
        /*0000*/                   EXIT ;
"""


def test_sass_main_loop_mix():
    funcs = kernel_report.parse_sass(SASS)
    assert set(funcs) == {"_Z6kernelPf", "_Z5outerPf", "_Z4copyPf"}
    mix = kernel_report.main_loop_mix(funcs["_Z6kernelPf"])
    # The loop is 0x10..0x70: LDS, 2 FFMA, IADD3, IMAD.WIDE, BRA (the NOP is not counted).
    assert mix == {"loop_insns": 6, "ffma": 2, "ffma_pct": 33.3, "lds": 1, "ldg": 0, "sts": 0,
                   "int": 2, "int_pct": 33.3, "wide_int": 1}
    assert kernel_report.main_loop_mix(funcs["_Z4copyPf"]) is None
    # cuobjdump's absolute targets; the outer loop (0x0..0x40) holds 3 FFMA, the inner 1.
    outer = kernel_report.main_loop_mix(funcs["_Z5outerPf"])
    assert (outer["loop_insns"], outer["ffma"]) == (5, 3)
    assert kernel_report.opcode("@!P0 IMAD.WIDE.U32 R1, R2") == "IMAD.WIDE.U32"


# Loops as nvcc 13 compiles them for sm_90 (cut to the instructions that matter): a signed 32-bit
# division by a loop-invariant divisor (the reciprocal hoisted: quotient and corrections in the
# loop), a 64-bit division (a CALL of a routine holding I2F.U64.RP), a FastDiv (no correction),
# and a float4 copy.
DIV_SASS = """
        Function : _Z5div32PKiPiii
        /*0100*/                   I2F.RP R9, R0 ;
        /*0120*/                   MUFU.RCP R9, R9 ;
        /*0150*/                   F2I.FTZ.U32.TRUNC.NTZ R11, R10 ;
        /*0190*/                   IMAD.HI.U32 R12, R11, R15, R10 ;
        /*01a0*/                   IMAD.WIDE R10, R13, 0x4, R4 ;
        /*01b0*/                   LDG.E R11, desc[UR4][R10.64] ;
        /*0200*/                   IMAD.HI.U32 R14, R12, R15, RZ ;
        /*0230*/                   IMAD R15, R18, R16, R15 ;
        /*0240*/                   ISETP.GT.U32.AND P2, PT, R0, R15, PT ;
        /*0260*/              @!P2 VIADD R14, R14, 0x1 ;
        /*02d0*/              @!P1 BRA 0x1a0 ;
        /*02f0*/                   STG.E desc[UR4][R2.64], R9 ;
        /*0300*/                   EXIT ;
        Function : _Z5div64PKlPlll
        /*0130*/                   LDG.E.64 R2, desc[UR6][R2.64] ;
        /*01d0*/                   CALL.REL.NOINC 0x3d0 ;
        /*0360*/              @!P0 BRA 0x130 ;
        /*03b0*/                   STG.E.64 desc[UR6][R2.64], R4 ;
        /*03c0*/                   EXIT ;
        /*03d0*/                   I2F.U64.RP R9, UR4 ;
        /*03e0*/                   MUFU.RCP R9, R9 ;
        /*0900*/                   RET.REL.NODEC R10 0x0 ;
        Function : _Z7fastdivPKiPijji
        /*00f0*/                   LDG.E R3, desc[UR4][R2.64] ;
        /*0110*/                   ISETP.GE.AND P0, PT, R11, UR6, PT ;
        /*0130*/                   IMAD.HI.U32 R0, R3, UR8, R2 ;
        /*0140*/                   SHF.R.U32.HI R0, RZ, UR9, R0 ;
        /*0160*/              @!P0 BRA 0xe0 ;
        /*0180*/                   STG.E desc[UR4][R4.64], R9 ;
        Function : _Z3vecPK6float4PS_i
        /*00a0*/                   LDG.E.128.CONSTANT R12, desc[UR6][R4.64] ;
        /*00e0*/                   STG.E.128 desc[UR6][R2.64], R12 ;
        /*00f0*/              @!P0 BRA 0x90 ;
"""


def test_sass_loop_divisions_and_widths():
    funcs = kernel_report.parse_sass(DIV_SASS)
    div = {name: kernel_report.loop_divisions(f) for name, f in funcs.items()}
    # div32: the reciprocal (before the loop) is not in it; the quotient and correction are.
    assert div == {"_Z5div32PKiPiii": 1, "_Z5div64PKlPlll": 1, "_Z7fastdivPKiPijji": 0,
                   "_Z3vecPK6float4PS_i": 0}
    assert kernel_report.memory_widths(funcs["_Z3vecPK6float4PS_i"]) == {
        "ldg_all": 1, "ldg128": 1, "stg_all": 1, "stg128": 1}
    assert kernel_report.memory_widths(funcs["_Z5div64PKlPlll"]) == {
        "ldg_all": 1, "ldg128": 0, "stg_all": 1, "stg128": 0}
    row = {"name": "lrn_fwd_kernel<4, true>", "arch": "sm_90", "spill_st": 0, "spill_ld": 0,
           "loop_div": 1, "ldg_all": 4, "ldg128": 3, "stg_all": 2, "stg128": 2}
    targets = {"max_loop_div": 0, "kernels": [],
               "memory": [{"name": "lrn_fwd_kernel<4", "archs": ["sm_90"],
                           "min_ldg128_pct": 100, "min_stg128_pct": 100}]}
    bad = kernel_report.check([row], targets)
    assert len(bad) == 2 and "integer divisions" in bad[0] and "3 of 4 LDG" in bad[1]
    assert kernel_report.check([dict(row, loop_div=0, ldg128=4)], targets) == []


# Loops cut from nvcc 13's sm_90 code of this project's kernels: a walk by 64-bit pointer
# increments (the pair fed back into its own add), a 32-bit offset from a base pointer (the
# IMAD.WIDE only forms the load's address; the pair is then overwritten by a 128-bit shared load
# and by the next iteration's reload of the base), a 64-bit loop counter (IMAD.X and the
# compare's .EX half), and a Philox round's 32 x 32 -> 64-bit product (data, not an index).
WIDE_SASS = """
        Function : _Z6ptrincPKfPfi
        /*0850*/                   LDG.E.CONSTANT R11, desc[UR22][R6.64] ;
        /*0880*/                   IADD3 R6, P3, R6, UR32, RZ ;
        /*08b0*/                   IADD3.X R7, R7, UR31, RZ, P3, !PT ;
        /*08e0*/                   FFMA R20, R11, R8, R20 ;
        /*08f0*/               @P0 BRA 0x850 ;
        Function : _Z6offsetPKfPfi
        /*0100*/              @!P0 LDC.64 R46, c[0x0][0x280] ;
        /*0110*/              @!P0 IMAD.WIDE R46, R33, 0x4, R46 ;
        /*0120*/              @!P0 LDG.E.CONSTANT R91, desc[UR12][R46.64] ;
        /*0130*/                   IADD3 R33, R33, R10, RZ ;
        /*0140*/                   LDS.128 R44, [R53] ;
        /*0150*/                   FFMA R44, R44, R45, R46 ;
        /*0160*/               @P1 BRA 0x100 ;
        Function : _Z7counterPfl
        /*0200*/                   IADD3 R4, P0, R4, 0x1, RZ ;
        /*0210*/                   IMAD.X R5, RZ, RZ, R5, P0 ;
        /*0220*/                   ISETP.NE.U32.AND P0, PT, R4, RZ, PT ;
        /*0230*/                   ISETP.NE.AND.EX P0, PT, R5, RZ, PT, P0 ;
        /*0240*/               @P0 BRA 0x200 ;
        /*0250*/                   IMAD.WIDE R2, R4, 0x4, R2 ;
        /*0260*/                   IADD3 R2, P0, R2, 0x4, RZ ;
        Function : _Z6philoxPjj
        /*0300*/                   IMAD.WIDE.U32 R4, R0, -0x2daee0ad, RZ ;
        /*0310*/                   LOP3.LUT R0, R5, R6, R4, 0x96, !PT ;
        /*0320*/               @P0 BRA 0x300 ;
"""


def test_sass_loop_wide_index_arithmetic():
    funcs = kernel_report.parse_sass(WIDE_SASS)
    wide = {name: kernel_report.loop_wide(f) for name, f in funcs.items()}
    # The counter's function has 64-bit arithmetic after its loop too: not counted.
    assert wide == {"_Z6ptrincPKfPfi": 1, "_Z6offsetPKfPfi": 0, "_Z7counterPfl": 2,
                    "_Z6philoxPjj": 0}
    row = {"name": "bias_fwd_kernel<true, int>", "arch": "sm_90", "spill_st": 0, "spill_ld": 0,
           "loop_div": 0, "loop_wide": 1}
    targets = {"max_loop_div": 0, "max_loop_wide": 0, "wide_index_args": ["long"],
               "kernels": []}
    bad = kernel_report.check([row], targets)
    assert len(bad) == 1 and "1 64-bit integer index instructions" in bad[0]
    # The int64_t instance of the same kernel is the path for 2^31 elements or more: exempt.
    assert kernel_report.check([dict(row, name="bias_fwd_kernel<true, long>")], targets) == []
    assert kernel_report.check([dict(row, loop_wide=0)], targets) == []
    # A recorded ceiling (what ptxas still forms on a 32-bit path) holds the count where it is.
    ceiling = dict(targets, loop_wide_ceilings={"bias_fwd_kernel<true, int> sm_90": 1})
    assert kernel_report.check([row], ceiling) == []
    assert "> 1" in kernel_report.check([dict(row, loop_wide=2)], ceiling)[0]
    assert "> 0" in kernel_report.check([dict(row, arch="sm_80")], ceiling)[0]


def test_kernel_names_and_check():
    name = ("void convnet::(anonymous namespace)::conv_fwd_tile_kernel<convnet::TileShape<128, 128, "
            "8, 8, 8> >(convnet::(anonymous namespace)::ConvDims, const float *)")
    assert kernel_report.short(name) == "conv_fwd_tile_kernel<128x128>"
    row = {"name": "conv_fwd_tile_kernel<128x128>", "arch": "sm_90", "regs": 153, "spill_st": 0,
           "spill_ld": 0, "blocks_per_sm": 1, "ffma_pct": 52.0, "wide_int": 3}
    targets = {"kernels": [{"name": "conv_fwd_tile_kernel", "archs": ["sm_90"], "min_blocks": 2,
                            "min_ffma_pct": 50.0, "max_wide_int": 0}]}
    bad = kernel_report.check([row], targets)
    assert len(bad) == 2 and "1 blocks/SM" in bad[0] and "64-bit" in bad[1]
    ok = dict(row, blocks_per_sm=2, wide_int=0)
    assert kernel_report.check([ok], targets) == []
    assert "spills" in kernel_report.check([dict(ok, spill_st=8)], targets)[0]
    assert "no such kernel" in kernel_report.check([], targets)[0]


def test_run_step_timeout_kills_the_process_group(tmp_path):
    log = tmp_path / "s.log"
    t0 = time.monotonic()
    # A child of the shell must die too, or the pipe would keep the step waiting.
    step = gpu_check.run_step("hang", ["bash", "-c", "sleep 60 & sleep 60"], 1, str(log))
    assert time.monotonic() - t0 < 15
    assert step["timed_out"] and step["rc"] == 124
    assert "killed after 1 s" in log.read_text()
    ok = gpu_check.run_step("ok", ["bash", "-c", "echo hi; exit 3"], 10, str(log))
    assert ok["rc"] == 3 and not ok["timed_out"] and "hi" in log.read_text()


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_x[cuda]"/>
<testcase classname="tests.test_a" name="test_y[cuda-5-7]"><failure message="boom"/></testcase>
<testcase classname="tests.test_a" name="test_z[emu-forward]"><skipped message="no emu"/></testcase>
<testcase classname="tests.test_b" name="test_w[3-cuda-1]"/>
<testcase classname="tests.test_b" name="test_cpu_only"><error message="e"/></testcase>
</testsuite></testsuites>"""


def test_parse_junit(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT)
    c = gpu_check.parse_junit(str(path))
    assert (c["total"], c["passed"], c["failed"], c["errors"], c["skipped"]) == (5, 2, 1, 1, 1)
    assert (c["cuda_total"], c["cuda_passed"]) == (3, 2)
    assert c["failed_names"] == ["tests.test_a::test_y[cuda-5-7]", "tests.test_b::test_cpu_only"]


def test_sanitizer_errors():
    assert gpu_check.sanitizer_errors("========= ERROR SUMMARY: 0 errors\n") == 0
    assert gpu_check.sanitizer_errors("========= ERROR SUMMARY: 7 errors\n") == 7
    assert gpu_check.sanitizer_errors("========= Invalid __global__ read of size 4\n"
                                      "========= Race reported between\n") == 2


def _report(mode, **kw):
    base = {"mode": mode, "quick": False, "started": "now", "host": "h", "seconds": 1.0,
            "device": None, "steps": [{"name": "build", "rc": 0, "seconds": 1.0,
                                       "timed_out": False, "log": "build.log"}],
            "benchmarks": {}}
    base.update(kw)
    return base


def test_verdict():
    fake = gpu_check.fake_results()
    assert gpu_check.verdict(_report("gpu", **fake)) == (True, [])
    failed = dict(fake["tests"], failed=2, failed_names=["a", "b"])
    ok, why = gpu_check.verdict(_report("gpu", tests=failed, sanitizer=fake["sanitizer"]))
    assert not ok and "2 tests failed" in why[0]
    none_ran = dict(fake["tests"], cuda_passed=0)
    assert not gpu_check.verdict(_report("gpu", tests=none_ran, sanitizer=[]))[0]
    racy = [{"tool": "racecheck", "rc": 3, "errors": 4, "seconds": 1.0}]
    ok, why = gpu_check.verdict(_report("gpu", tests=fake["tests"], sanitizer=racy))
    assert not ok and "racecheck: 4 errors" in why[0]
    assert not gpu_check.verdict(_report("gpu"))[0]  # no test report at all
    broken = _report("dry")
    broken["steps"][0]["rc"] = 1
    assert not gpu_check.verdict(broken)[0]
    assert gpu_check.verdict(_report("dry"))[0]
    crashed = _report("gpu", **fake)  # an error message that kills the process (rc -11)
    crashed["steps"].append({"name": "import", "rc": -11, "log": "import.log"})
    ok, why = gpu_check.verdict(crashed)
    assert not ok and why == ["import or error path failed (rc -11, log import.log)"]


def test_import_check_raises_through_every_built_module():
    """The import step's script: a shape error comes back as ValueError from each backend."""
    out = subprocess.run([sys.executable, "-c", gpu_check.IMPORT_CHECK], capture_output=True,
                         text=True, timeout=120, cwd=gpu_check.ROOT)
    assert out.returncode == 0, out.stderr
    assert "cpu error path: scale_by_denoms: denoms has shape (2, 3, 3)" in out.stdout


def test_write_report_labels_fake_figures(tmp_path):
    fake = gpu_check.fake_results()
    report = _report("dry", fake_results=True, no_gpu_reason="nvidia-smi not found",
                     tests=fake["tests"], sanitizer=fake["sanitizer"],
                     benchmarks={"fake " + k: v for k, v in fake["benchmarks"].items()},
                     device={"name": "X", "arch": "90", "peaks": {"fp32_peak_gflops": 1000.0}})
    summary = gpu_check.write_report(report, str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "Every test, sanitizer and benchmark figure below is FAKE" in md
    assert "## FAKE Tests" in md and "## FAKE Benchmark: fake gemm" in md
    assert "## Benchmark: gemm" not in md
    assert "| 33.3 | 3.3 |" in md  # variant 3's 33.3 GFLOP/s of a 1000 GFLOP/s peak
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["fake_results"] and data["verdict"]["ok"]
    assert "FAKE" in summary[0] and any("report.md" in s for s in summary)


def test_dry_run_end_to_end(tmp_path, monkeypatch):
    """main() without a GPU: a (stubbed) build, the import step, benchmarks' no-GPU path skipped
    here (stubbed to none), and a report from the fake set; exit status 0."""
    def fake_build(outdir, arch, build_dir, timeout):
        assert arch is None  # no GPU: _cpu only
        return {"name": "build", "cmd": ["true"], "rc": 0, "seconds": 0.0, "timed_out": False,
                "log": "build.log"}
    monkeypatch.setattr(gpu_check, "build", fake_build)
    monkeypatch.setattr(gpu_check, "bench_steps", lambda *a: [])
    assert gpu_check.main([str(tmp_path), "--dry", "--quick"]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["mode"] == "dry" and data["fake_results"] and data["no_gpu_reason"] == "--dry given"
    assert [s["name"] for s in data["steps"]] == ["build", "import"]
    assert data["steps"][1]["rc"] == 0
    assert "backends" in (tmp_path / "import.log").read_text()
    md = (tmp_path / "report.md").read_text()
    assert "## FAKE Benchmark: fake alexnet" in md and "## FAKE Tests (cuda:0)" in md


def test_budget_cuts_and_skips_steps(tmp_path, monkeypatch):
    """Steps never run past the whole run's budget: with 2 s left, the import step (60 s timeout)
    is skipped and reported so."""
    monkeypatch.setattr(gpu_check, "BUDGET", (2, 2))
    monkeypatch.setattr(gpu_check, "DRY_BUILD_SECONDS", 0)
    monkeypatch.setattr(gpu_check, "build", lambda outdir, arch, build_dir, timeout: {
        "name": "build", "cmd": [], "rc": 0, "seconds": 0.0, "timed_out": False, "log": "",
        "timeout_given": timeout})
    monkeypatch.setattr(gpu_check, "bench_steps", lambda *a: [])
    assert gpu_check.main([str(tmp_path), "--dry"]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["steps"][0]["timeout_given"] <= 2
    assert "budget" in data["steps"][1]["skipped"]
    assert "skipped" in (tmp_path / "report.md").read_text()


def test_sanitizer_set_selects_cuda_tests():
    """Every node of the sanitizer's fixed set exists and has cuda:0 cases (-m gpu), so on a GPU
    the sanitizer runs kernels rather than nothing."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                          "no:cacheprovider", "-m", "gpu and not slow",
                          *gpu_check.SANITIZER_TESTS], cwd=gpu_check.ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    for node in gpu_check.SANITIZER_TESTS:
        picked = [i for i in ids if i.startswith(node + "[")]
        assert picked and all("cuda" in i for i in picked), node
