// Portability for code shared by the CPU backend, nvcc, and the SIMT emulation.
// Shape maths, the RNG and params structs are written once as CONVNET_HD functions and
// compiled by all three compilers.
#pragma once
#if defined(__CUDACC__) || defined(CONVNET_SIMT)
#define CONVNET_HD __host__ __device__ __forceinline__
#else
#define CONVNET_HD inline
#endif
