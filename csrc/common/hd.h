// Portability for code shared by the CPU backend, nvcc, and the SIMT emulation.
// Shape maths, the RNG and params structs are written once as CONVNET_HD functions and
// compiled by all three compilers.
#pragma once
#if defined(__CUDACC__)
#define CONVNET_HD __host__ __device__ __forceinline__
#elif defined(CONVNET_SIMT)
// The same meaning, spelled without simt.h's keyword macros: every source of convnet._emu is
// compiled with CONVNET_SIMT, but only the kernel sources include simt.h.
#define CONVNET_HD inline __attribute__((always_inline))
#else
#define CONVNET_HD inline
#endif
