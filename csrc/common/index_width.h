// Index width of the memory-bound and direct CUDA kernels (csrc/cuda/index_width.cuh). Each such
// kernel takes its offsets' type as a template parameter: int when the host has checked that
// every offset it forms lies in (-2^31, 2^31) (one 32-bit add per step, the address formed by
// the load's IMAD.WIDE from the kernel's base pointer), int64_t beyond. force_wide_indices(true)
// makes every launch take the 64-bit path whatever the sizes, so the tests run that path on small
// tensors and compare its bits with the 32-bit one's (the float operations are the same).
#pragma once

namespace convnet {

void force_wide_indices(bool on);
bool wide_indices_forced();

}  // namespace convnet
