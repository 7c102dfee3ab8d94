"""The machine's FP32 FMA peak, measured with a register-only FMA loop (AVX-512 and AVX2, 1 thread
and all threads of the CPU backend). Clocks under load differ from the nominal ones, so the other
benchmarks measure this too and report % of it.

    python benchmarks/peak.py [--repeats 5]"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ and the source tree (in-place builds)

import convnet  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cpu = convnet.device.module_for("cpu")
    order = {"portable": 0, "avx2": 1, "avx512": 2}
    threads = sorted({1, cpu.num_threads()})
    print(f"CPU path in use: {cpu.isa()} (best supported: {cpu.isa_supported()}), "
          f"{cpu.num_threads()} threads")
    for isa in ("avx512", "avx2"):
        if order[cpu.isa_supported()] < order[isa]:
            print(f"{isa:>7}: not supported by this CPU")
            continue
        for t in threads:
            g = cpu.measure_fma_peak(isa, t, 20_000_000, args.repeats)
            print(f"{isa:>7} {t} thread{'s' if t > 1 else ' '}: {g:7.1f} GFLOP/s (best of "
                  f"{args.repeats})")


if __name__ == "__main__":
    main()
