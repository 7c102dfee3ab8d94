// Threading for the CPU backend (OpenMP underneath). Memory-bound loops split a flat range into
// one contiguous chunk per thread, and stay single-threaded when the range is too small to pay
// for waking the other threads.
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace convnet {

constexpr int64_t kMinParallelWork = 1 << 15;

template <class F>
void parallel_range(int64_t n, F&& f, int64_t min_work = kMinParallelWork) {
  int threads = omp_get_max_threads();
  if (n < min_work || threads == 1) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    // Chunks aligned to 16 floats (a cache line) so threads never share a line they write.
    int64_t chunk = ((n + nt - 1) / nt + 15) / 16 * 16;
    int64_t b = std::min(n, t * chunk), e = std::min(n, b + chunk);
    if (b < e) f(b, e);
  }
}

// Items [0, count) handed out to a team of `threads`: each thread first takes its own, t,
// t + threads, ... in order, then, once those are gone, whatever of the others' is still free,
// from the last item back (the owner works forward, so the two rarely meet). A flag per item
// makes each go to exactly one thread. A team that is on time thus splits the items the same way
// on every call, so the cache lines a thread writes (a packed block, its columns of C) are the
// ones it wrote last time; a thread woken late or slowed by another job leaves its items to the
// one that is running. Where the two cores share no cache, a line last written by the other
// core costs a transfer between them (Zen 4 under KVM: 0.29 us per round trip, about twice a
// memory access): two threads taking items from one counter packed their halves of the SGEMM's
// A at a third of the speed one thread packs all of it.
class ClaimedItems {
 public:
  // `taken` holds `count` flags, all false.
  ClaimedItems(std::atomic<bool>* taken, int64_t count, int threads)
      : taken_(taken), count_(count), threads_(threads) {}
  int64_t count() const { return count_; }

  // Where one thread stands in its own items and in the others'.
  struct Cursor {
    int64_t own, other;
  };
  Cursor start(int thread) const { return {thread, count_ - 1}; }

  // The next item for `thread`, or -1 when every item is taken.
  int64_t next(int thread, Cursor& at) const {
    while (at.own < count_) {
      const int64_t i = at.own;
      at.own += threads_;
      if (claim(i)) return i;
    }
    while (at.other >= 0) {
      const int64_t i = at.other--;
      if (i % threads_ != thread && claim(i)) return i;
    }
    return -1;
  }

 private:
  bool claim(int64_t i) const { return !taken_[i].exchange(true, std::memory_order_acq_rel); }
  std::atomic<bool>* taken_;
  int64_t count_;
  int threads_;
};

}  // namespace convnet
