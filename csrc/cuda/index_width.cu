// The process-wide switch of csrc/common/index_width.h.
#include <atomic>

#include "index_width.h"

namespace convnet {
namespace {
std::atomic<bool> forced{false};
}  // namespace

void force_wide_indices(bool on) { forced.store(on, std::memory_order_relaxed); }
bool wide_indices_forced() { return forced.load(std::memory_order_relaxed); }

}  // namespace convnet
