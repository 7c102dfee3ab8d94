// The data cache sizes of the CPU the process runs on, read once (glibc's sysconf, which asks
// cpuid), for cache blocking that follows the machine instead of one constant. Sizes the system
// does not report fall back to common values (32 KB L1d, 512 KB L2, 2 MB of L3 per core).
#pragma once
#include <cstdint>

namespace convnet {

struct CacheSizes {
  int64_t l1d, l2, l3_per_core;  // bytes; L3 divided among the cores that share it
};

const CacheSizes& cache_sizes();

}  // namespace convnet
