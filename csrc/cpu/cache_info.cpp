#include "cache_info.h"

#include <unistd.h>

#include <algorithm>
#include <thread>

namespace convnet {

static int64_t sysconf_or(int name, int64_t fallback) {
  long v = sysconf(name);
  return v > 0 ? int64_t(v) : fallback;
}

const CacheSizes& cache_sizes() {
  static const CacheSizes sizes = [] {
    int64_t cores = std::max(1u, std::thread::hardware_concurrency());
    CacheSizes s;
    s.l1d = sysconf_or(_SC_LEVEL1_DCACHE_SIZE, 32 << 10);
    s.l2 = sysconf_or(_SC_LEVEL2_CACHE_SIZE, 512 << 10);
    s.l3_per_core = sysconf_or(_SC_LEVEL3_CACHE_SIZE, cores * (2 << 20)) / cores;
    return s;
  }();
  return sizes;
}

}  // namespace convnet
