// Floats in one SIMD register of the instruction set the including file is compiled for: its
// -m flags (*_avx512.cpp: 16, *_avx2.cpp: 8, the portable build: SSE's 4). A namespace-scope
// constexpr has internal linkage, so each translation unit keeps its own value.
#pragma once

namespace convnet {

#if defined(__AVX512F__)
constexpr int kSimdFloats = 16;
#elif defined(__AVX2__)
constexpr int kSimdFloats = 8;
#else
constexpr int kSimdFloats = 4;
#endif

}  // namespace convnet
