#!/bin/sh
# Builds gemm_tile_probe.cpp against a gemm_avx2.cpp (default: this tree's) with the library's
# flags for that file, into build/gemm_tile_probe/probe (or the path in $PROBE); with --avx512
# first, against a gemm_avx512.cpp (the 14x32 kernel) with that file's flags.
set -e
cd "$(dirname "$0")/.."
avx512=
if [ "$1" = --avx512 ]; then avx512=1; shift; fi
out=build/gemm_tile_probe
mkdir -p $out
cxx="${CXX:-g++} -O3 -std=gnu++17 -fopenmp -fno-math-errno -Icsrc/cpu -Icsrc/common"
x512="-mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma -mprefer-vector-width=512"
# What the kernel file links against (the packs behind its driver; the FMA loop).
$cxx -c csrc/cpu/cache_info.cpp -o $out/cache_info.o
$cxx -c csrc/cpu/isa.cpp -o $out/isa.o
$cxx -c csrc/cpu/gemm_pack.cpp -o $out/gemm_pack.o
$cxx -mavx2 -mfma -c csrc/cpu/pack_avx2.cpp -o $out/pack_avx2.o
$cxx $x512 -c csrc/cpu/pack_avx512.cpp -o $out/pack_avx512.o
if [ -n "$avx512" ]; then
  kernel=$(realpath "${1:-csrc/cpu/gemm_avx512.cpp}")
  $cxx $x512 -c csrc/cpu/fma_peak_avx512.cpp -o $out/fma_peak.o
  flags="$x512 -DPROBE_AVX512"
else
  kernel=$(realpath "${1:-csrc/cpu/gemm_avx2.cpp}")
  $cxx -mavx2 -mfma -c csrc/cpu/fma_peak_avx2.cpp -o $out/fma_peak.o
  flags="-mavx2 -mfma"
fi
$cxx $flags -DKERNEL_SRC="\"$kernel\"" benchmarks/gemm_tile_probe.cpp $out/*.o \
  -o "${PROBE:-$out/probe}"
