// SIMT emulation runtime: fibers, block scheduler, worker pool, emulated devices and the CUDA
// runtime API subset declared in simt.h. Compiled by the host compiler only.
//
// Execution model (see simt.h for what is checked):
//   launch -> blocks handed out to worker OS threads (atomic counter) -> per block, the CUDA
//   threads run as fibers. A fiber takes the next not-yet-started thread (in the chosen order) and
//   runs it; when the thread exits, the same fiber, without any switch, takes the next one. Only a
//   thread that blocks (barrier / warp op) keeps its fiber, and a fresh fiber carries on with the
//   next threads. When nothing is runnable, the scheduler resolves the waits: completed warp ops
//   first, then __syncthreads; otherwise it reports the stuck state as an error.
// Context switch: hand-written x86-64 (callee-saved registers only: the fibers of a worker share
// its MXCSR / x87 control word, which kernels do not change); ucontext elsewhere.
#include "simt.h"

// The hand-written switch on x86-64; ucontext elsewhere (or with -DSIMT_UCONTEXT, to test it).
#if defined(__x86_64__) && !defined(SIMT_UCONTEXT)
#define SIMT_ASM_SWITCH 1
#else
#define SIMT_ASM_SWITCH 0
#endif

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#if !SIMT_ASM_SWITCH
#include <ucontext.h>
#endif

// Anchor in the static shared-memory section, so the section exists in every build.
__shared__ char simt_shared_anchor_[16];
extern "C" char __start_simt_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_simt_shared[] __attribute__((weak, visibility("hidden")));

namespace simt {
namespace {

// ---- configuration ----------------------------------------------------------------------------------

int env_int(const char* name, int dflt, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end || x < lo || x > hi) {
    std::ostringstream o;
    o << "simt: environment variable " << name << "=" << v << " is not an integer in [" << lo
      << ", " << hi << "]";
    throw Error(o.str());
  }
  return int(x);
}

std::atomic<int> g_order{-1};  // -1: not read from the environment yet
std::atomic<uint64_t> g_seed{0};

void parse_order(const std::string& s, Order* o, uint64_t* seed, bool* seed_given) {
  std::string name = s, arg;
  size_t c = s.find(':');
  if (c != std::string::npos) name = s.substr(0, c), arg = s.substr(c + 1);
  *seed_given = false;
  if (name == "forward") *o = Order::forward;
  else if (name == "reverse") *o = Order::reverse;
  else if (name == "random") *o = Order::random;
  else throw Error("simt: unknown thread order '" + s + "' (forward, reverse or random[:seed])");
  if (!arg.empty()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(arg.c_str(), &end, 10);
    if (*end || name != "random") throw Error("simt: bad thread order '" + s + "'");
    *seed = v;
    *seed_given = true;
  }
}

void init_order_from_env() {
  if (g_order.load() >= 0) return;
  const char* v = std::getenv("CONVNET_SIMT_ORDER");
  Order o = Order::forward;
  uint64_t seed = 0;
  bool given = false;
  if (v && *v) parse_order(v, &o, &seed, &given);
  int expected = -1;
  if (g_order.compare_exchange_strong(expected, int(o))) g_seed = seed;
}

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void fill_pattern(void* p, size_t bytes, uint32_t pattern) {
  auto* w = static_cast<uint32_t*>(p);
  size_t n = bytes / 4;
  for (size_t i = 0; i < n; ++i) w[i] = pattern;
  std::memcpy(reinterpret_cast<char*>(p) + n * 4, &pattern, bytes - n * 4);
}

std::atomic<uint64_t> st_launches{0}, st_blocks{0}, st_threads{0}, st_switches{0};

// ---- errors of the runtime API --------------------------------------------------------------------------
thread_local cudaError_t tl_last_error = cudaSuccess;
thread_local std::string tl_last_detail;
thread_local int tl_device = 0;

cudaError_t fail(cudaError_t e, const std::string& detail) {
  tl_last_error = e;
  tl_last_detail = std::string(cudaGetErrorName(e)) + ": " + detail;
  return e;
}

// ---- emulated devices and their memory ----------------------------------------------------------------
constexpr size_t kGuardBytes = 256;
constexpr size_t kAlign = 256;

struct Alloc {
  char* raw;
  char* body;
  size_t bytes;  // as requested
  size_t cap;    // bytes rounded up to kAlign; [bytes, cap) is guard too
  int dev;
  uint64_t serial;
};

struct Devices {
  std::mutex m;
  int count = 0;
  std::vector<std::map<uintptr_t, Alloc>> allocs;  // per device, keyed by body address
  std::vector<size_t> used;
  std::vector<std::vector<bool>> peer;
  uint64_t serial = 0;
  void init() {
    if (count) return;
    count = env_int("CONVNET_EMU_DEVICES", 2, 1, 16);
    allocs.resize(count);
    used.assign(count, 0);
    peer.assign(count, std::vector<bool>(count, false));
  }
  // Allocation holding [p, p + bytes), or nullptr. Caller holds m.
  const Alloc* find(const void* p, int* dev_out = nullptr) {
    init();
    auto a = reinterpret_cast<uintptr_t>(p);
    for (int d = 0; d < count; ++d) {
      auto it = allocs[d].upper_bound(a);
      if (it == allocs[d].begin()) continue;
      --it;
      const Alloc& al = it->second;
      if (a >= it->first && a < it->first + std::max<size_t>(al.bytes, 1)) {
        if (dev_out) *dev_out = d;
        return &al;
      }
    }
    return nullptr;
  }
};
Devices& devices() {
  static Devices* d = new Devices;  // never destroyed: workers may outlive static destructors
  return *d;
}

std::string describe(const Alloc& a) {
  std::ostringstream o;
  o << "allocation #" << a.serial << " (" << a.bytes << " bytes at " << static_cast<void*>(a.body)
    << " on device " << a.dev << ")";
  return o.str();
}

// Returns an empty string if the guards of `a` are intact, else what was overwritten.
std::string guard_damage(const Alloc& a) {
  std::ostringstream o;
  auto scan = [&](const char* from, const char* to, const char* where) {
    long first = -1, last = -1;
    for (const char* p = from; p < to; p += 4) {
      uint32_t w;
      std::memcpy(&w, p, 4);
      if (w != kGuard) {
        // narrow down to bytes
        for (int k = 0; k < 4; ++k) {
          unsigned char b = static_cast<unsigned char>(p[k]);
          unsigned char g = static_cast<unsigned char>(kGuard >> (8 * k));
          if (b != g) {
            long off = long(p + k - a.body);
            if (first < 0) first = off;
            last = off;
          }
        }
      }
    }
    if (first >= 0)
      o << (o.tellp() ? "; " : "") << "bytes [" << first << ", " << last + 1
        << ") relative to its start were written (" << where << ")";
  };
  scan(a.raw, a.body, "before the start");
  // the tail between bytes and cap is not 4-aligned in general: check bytewise
  {
    long first = -1, last = -1;
    for (size_t i = a.bytes; i < a.cap + kGuardBytes; ++i) {
      unsigned char g = static_cast<unsigned char>(kGuard >> (8 * (i % 4)));
      if (static_cast<unsigned char>(a.body[i]) != g) {
        if (first < 0) first = long(i);
        last = long(i);
      }
    }
    if (first >= 0)
      o << (o.tellp() ? "; " : "") << "bytes [" << first << ", " << last + 1
        << ") relative to its start were written (past the end)";
  }
  return o.str();
}

void set_guards(Alloc& a) {
  fill_pattern(a.raw, kGuardBytes, kGuard);
  for (size_t i = a.bytes; i < a.cap + kGuardBytes; ++i)
    a.body[i] = static_cast<char>(kGuard >> (8 * (i % 4)));
}

// Throws simt::Error naming `context` if any guard of any live allocation was written.
void check_all_guards(const std::string& context) {
  Devices& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  D.init();
  std::ostringstream o;
  int n = 0;
  for (auto& dev : D.allocs)
    for (auto& kv : dev) {
      std::string dmg = guard_damage(kv.second);
      if (dmg.empty()) continue;
      if (n++ < 4) o << "\n  " << describe(kv.second) << ": " << dmg;
      set_guards(kv.second);  // report each overrun once
    }
  if (n) {
    std::ostringstream m;
    m << "simt: out-of-bounds write " << context << ":" << o.str();
    if (n > 4) m << "\n  (" << n - 4 << " more allocations damaged)";
    throw Error(m.str());
  }
}

// ---- fibers ---------------------------------------------------------------------------------------------------
constexpr size_t kStackBytes = 64 * 1024;

struct Worker;
struct Fiber {
  void* sp = nullptr;
  char* mem = nullptr;  // mapping: guard page + stack
  size_t map_bytes = 0;
  Worker* w = nullptr;
  int id = 0;
#if !SIMT_ASM_SWITCH
  ucontext_t uc;
#endif
};

}  // namespace
}  // namespace simt

#if SIMT_ASM_SWITCH
// void simt_switch(void** save_sp, void* next_sp): saves the callee-saved state on the current
// stack, stores the stack pointer in *save_sp and resumes the context whose stack pointer is next_sp.
extern "C" void simt_switch(void** save_sp, void* next_sp);
extern "C" void simt_fiber_trampoline();
asm(R"(
  .text
  .globl simt_switch
  .hidden simt_switch
  .type simt_switch, @function
simt_switch:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size simt_switch, .-simt_switch

  .globl simt_fiber_trampoline
  .hidden simt_fiber_trampoline
  .type simt_fiber_trampoline, @function
simt_fiber_trampoline:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size simt_fiber_trampoline, .-simt_fiber_trampoline
)");
#endif

namespace simt {
namespace {

struct Thr {
  enum State : uint8_t { Unstarted, Running, Runnable, WaitBar, WaitWarp, Exited };
  uint3 tid;
  int lin;
  State st;
  int op;
  const char* file;
  int line;
  unsigned mask;
  uint64_t val;
  int arg, width;
  uint64_t res;
  Fiber* f;
};

struct Launch;

struct Worker {
  void* sched_sp = nullptr;
#if !SIMT_ASM_SWITCH
  ucontext_t sched_uc;
#endif
  std::vector<Fiber*> fibers;
  size_t fibers_used = 0;
  std::vector<Thr> thr;
  std::vector<int> order;
  size_t next_unstarted = 0;
  std::vector<int> runq, all, released;
  size_t runq_head = 0;
  int n = 0, n_exited = 0;
  Thr* cur = nullptr;
  const detail::LaunchInfo* L = nullptr;
  uint3 bid{};
  uint64_t rng = 0;
  std::vector<uint32_t> dsmem;
  bool failed = false;
  std::string error;
  uint64_t switches = 0;
  // static shared memory (the simt_shared TLS section) of this OS thread
  char* shared_lo = nullptr;
  size_t shared_bytes = 0;
};

thread_local Worker* tl_worker = nullptr;
std::atomic<bool> g_shared_poisoned{false};  // some worker found its static shared memory

void fiber_main(Fiber* f);

#if !SIMT_ASM_SWITCH
thread_local Fiber* tl_starting = nullptr;
void uc_entry() { fiber_main(tl_starting); }
#endif

Fiber* new_fiber(Worker* w) {
  long page = sysconf(_SC_PAGESIZE);
  auto* f = new Fiber;
  f->w = w;
  f->id = int(w->fibers.size());
  f->map_bytes = kStackBytes + size_t(page);
  void* m = mmap(nullptr, f->map_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (m == MAP_FAILED) throw Error("simt: cannot map a fiber stack");
  mprotect(m, size_t(page), PROT_NONE);  // guard page: a stack overflow faults
  f->mem = static_cast<char*>(m);
  return f;
}

// Prepares f to start fiber_main(f) at its next resume.
void fiber_reset(Fiber* f) {
#if SIMT_ASM_SWITCH
  // Stagger the stack tops (page-aligned otherwise): the hot top-of-stack lines of many fibers
  // would all map to the same L1 sets.
  char* top = f->mem + f->map_bytes - (f->id % 32) * 128;
  auto* s = reinterpret_cast<uint64_t*>(top);
  // return address at top - 8: the trampoline starts with a 16-byte aligned stack pointer
  *--s = reinterpret_cast<uint64_t>(&simt_fiber_trampoline);
  // Layout expected by simt_switch: [r15][r14][r13][r12][rbx][rbp][ret]
  *--s = 0;                                                     // rbp
  *--s = 0;                                                     // rbx
  *--s = reinterpret_cast<uint64_t>(f);                         // r12: argument
  *--s = reinterpret_cast<uint64_t>(&fiber_main);               // r13: entry
  *--s = 0;                                                     // r14
  *--s = 0;                                                     // r15
  f->sp = s;
#else
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = f->mem + (f->map_bytes - kStackBytes);
  f->uc.uc_stack.ss_size = kStackBytes;
  f->uc.uc_link = nullptr;
  makecontext(&f->uc, &uc_entry, 0);
#endif
}

inline void to_fiber(Worker* w, Fiber* f) {
  ++w->switches;
#if SIMT_ASM_SWITCH
  simt_switch(&w->sched_sp, f->sp);
#else
  tl_starting = f;
  swapcontext(&w->sched_uc, &f->uc);
#endif
}

inline void to_scheduler(Worker* w, Fiber* f) {
#if SIMT_ASM_SWITCH
  simt_switch(&f->sp, w->sched_sp);
#else
  swapcontext(&f->uc, &w->sched_uc);
#endif
}

std::string dim_str(uint3 v) {
  std::ostringstream o;
  o << "(" << v.x << "," << v.y << "," << v.z << ")";
  return o.str();
}

std::string where(const Worker* w) {
  std::ostringstream o;
  o << "kernel " << w->L->name << " launched at " << w->L->file << ":" << w->L->line << ", block "
    << dim_str(w->bid);
  return o.str();
}

void fiber_main(Fiber* f) {
  Worker* w = f->w;
  while (w->next_unstarted < size_t(w->n)) {
    Thr& t = w->thr[w->order[w->next_unstarted++]];
    t.f = f;
    t.st = Thr::Running;
    w->cur = &t;
    detail::tl_cur.tid = t.tid;
    try {
      w->L->thunk(w->L->closure);
    } catch (const Error& e) {  // a check of the emulator that fired inside the thread
      w->failed = true;
      w->error = e.what();
    } catch (const std::exception& e) {
      w->failed = true;
      w->error = "simt: " + where(w) + ", thread " + dim_str(t.tid) + ": exception in kernel: " + e.what();
    } catch (...) {
      w->failed = true;
      w->error = "simt: " + where(w) + ", thread " + dim_str(t.tid) + ": unknown exception in kernel";
    }
    t.st = Thr::Exited;
    ++w->n_exited;
    if (w->failed) break;
  }
  to_scheduler(w, f);
  __builtin_trap();  // a finished fiber is never resumed (it is reset first)
}

const char* warp_op_name(int op) {
  switch (op) {
    case detail::kSyncWarp: return "__syncwarp";
    case detail::kShfl: return "__shfl_sync";
    case detail::kShflUp: return "__shfl_up_sync";
    case detail::kShflDown: return "__shfl_down_sync";
    case detail::kShflXor: return "__shfl_xor_sync";
    case detail::kBallot: return "__ballot_sync";
    case detail::kAll: return "__all_sync";
    case detail::kAny: return "__any_sync";
  }
  return "?";
}
const char* bar_op_name(int op) {
  switch (op) {
    case detail::kBar: return "__syncthreads";
    case detail::kBarCount: return "__syncthreads_count";
    case detail::kBarAnd: return "__syncthreads_and";
    case detail::kBarOr: return "__syncthreads_or";
  }
  return "?";
}

std::string wait_str(const Thr& t) {
  std::ostringstream o;
  if (t.st == Thr::Exited) o << "has exited";
  else if (t.st == Thr::WaitBar) o << "waits at " << bar_op_name(t.op) << " " << t.file << ":" << t.line;
  else if (t.st == Thr::WaitWarp) o << "waits at " << warp_op_name(t.op) << " " << t.file << ":" << t.line;
  else o << "is running";
  return o.str();
}

[[noreturn]] void block_error(Worker* w, const std::string& what) {
  throw Error("simt: " + where(w) + ": " + what);
}

void push_ordered(Worker* w, std::vector<int>& ids) {
  Order o = Order(g_order.load());
  if (o == Order::reverse) std::reverse(ids.begin(), ids.end());
  else if (o == Order::random)
    for (size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[splitmix(w->rng) % i]);
  for (int i : ids) {
    w->thr[i].st = Thr::Runnable;
    w->runq.push_back(i);
  }
}

bool same_site(const Thr& a, const Thr& b) {
  return a.st == b.st && a.op == b.op && a.line == b.line &&
         (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

// Nothing runnable: complete what can be completed, or report why the block is stuck.
void resolve(Worker* w) {
  const int n = w->n;
  std::vector<int>& released = w->released;
  released.clear();
  // 1. warp ops, warp by warp, site by site
  bool any_warp = false;
  for (int i = 0; i < n && !any_warp; ++i) any_warp = w->thr[i].st == Thr::WaitWarp;
  for (int base = 0; base < n && any_warp; base += 32) {
    int lanes = std::min(32, n - base);
    bool done[32] = {};
    for (int l = 0; l < lanes; ++l) {
      Thr& a = w->thr[base + l];
      if (a.st != Thr::WaitWarp || done[l]) continue;
      unsigned group = 0;
      for (int k = 0; k < lanes; ++k)
        if (same_site(w->thr[base + k], a)) group |= 1u << k;
      bool complete = true;
      for (int k = 0; k < 32 && complete; ++k) {
        if (!(group >> k & 1)) continue;
        const Thr& m = w->thr[base + k];
        for (int j = 0; j < 32; ++j) {
          if (!(m.mask >> j & 1) || (group >> j & 1)) continue;
          std::ostringstream o;
          o << warp_op_name(m.op) << " at " << m.file << ":" << m.line << " (thread " << dim_str(m.tid)
            << ", mask 0x" << std::hex << m.mask << std::dec << ") names lane " << j << " of warp "
            << base / 32;
          if (j >= lanes) {
            o << ", which does not exist (the block has " << n << " threads)";
            block_error(w, o.str());
          }
          const Thr& x = w->thr[base + j];
          if (x.st == Thr::Exited) {
            o << " (thread " << dim_str(x.tid) << "), which has exited";
            block_error(w, o.str());
          }
          complete = false;  // may still arrive once other waits resolve
          break;
        }
      }
      for (int k = 0; k < 32; ++k)
        if (group >> k & 1) done[k] = true;
      if (!complete) continue;
      // compute results
      for (int k = 0; k < 32; ++k) {
        if (!(group >> k & 1)) continue;
        Thr& m = w->thr[base + k];
        int width = m.width;
        if (width <= 0 || width > 32 || (width & (width - 1)))
          block_error(w, std::string(warp_op_name(m.op)) + " at " + m.file + ":" +
                             std::to_string(m.line) + ": width " + std::to_string(width) +
                             " is not a power of 2 in [1, 32]");
        int seg = k & ~(width - 1), src = k;
        switch (m.op) {
          case detail::kShfl: src = seg + (m.arg & (width - 1)); break;
          case detail::kShflUp: src = (k - seg) - m.arg >= 0 ? k - m.arg : k; break;
          case detail::kShflDown: src = (k - seg) + m.arg < width ? k + m.arg : k; break;
          case detail::kShflXor: src = k ^ m.arg; if (src >= seg + width || src > 31) src = k; break;
          default: break;
        }
        unsigned voters = group & m.mask;
        uint64_t ballot = 0;
        for (int j = 0; j < 32; ++j)
          if ((voters >> j & 1) && w->thr[base + j].val) ballot |= 1ull << j;
        switch (m.op) {
          case detail::kSyncWarp: m.res = 0; break;
          case detail::kBallot: m.res = ballot; break;
          case detail::kAll: m.res = ballot == voters; break;
          case detail::kAny: m.res = ballot != 0; break;
          default:
            // a source lane that does not take part: undefined on a GPU, poison here
            m.res = (src >= 0 && src < 32 && (group >> src & 1))
                        ? w->thr[base + src].val
                        : (uint64_t(kPoison) << 32 | kPoison);
        }
        released.push_back(base + k);
      }
    }
  }
  if (!released.empty()) {
    std::sort(released.begin(), released.end());
    push_ordered(w, released);
    return;
  }
  // 2. stuck warp ops: report the first
  for (int i = 0; i < n; ++i) {
    const Thr& a = w->thr[i];
    if (a.st != Thr::WaitWarp) continue;
    int base = i & ~31;
    for (int j = 0; j < 32; ++j) {
      if (!(a.mask >> j & 1)) continue;
      const Thr& x = w->thr[base + j];
      if (same_site(x, a)) continue;
      std::ostringstream o;
      o << warp_op_name(a.op) << " at " << a.file << ":" << a.line << " (thread " << dim_str(a.tid)
        << ", mask 0x" << std::hex << a.mask << std::dec << ") waits for lane " << j << " (thread "
        << dim_str(x.tid) << "), which " << wait_str(x) << " (deadlock)";
      block_error(w, o.str());
    }
  }
  // 3. __syncthreads: every thread must wait at the same one
  {
    const Thr& f0 = w->thr[0];
    bool all_same = f0.st == Thr::WaitBar;
    int count = 0;
    for (int i = 0; i < n && all_same; ++i) {
      const Thr& t = w->thr[i];
      all_same = t.st == Thr::WaitBar && t.line == f0.line && t.file == f0.file;
      count += t.val != 0;
    }
    if (all_same) {  // the common case: release everyone
      for (int i = 0; i < n; ++i) {
        Thr& t = w->thr[i];
        t.res = t.op == detail::kBarCount ? uint64_t(count)
                : t.op == detail::kBarAnd ? uint64_t(count == n)
                : t.op == detail::kBarOr  ? uint64_t(count > 0)
                                          : 0;
      }
      w->all.resize(n);
      for (int i = 0; i < n; ++i) w->all[i] = i;
      push_ordered(w, w->all);
      return;
    }
  }
  const Thr* first = nullptr;
  for (int i = 0; i < n; ++i)
    if (w->thr[i].st == Thr::WaitBar) { first = &w->thr[i]; break; }
  if (!first) block_error(w, "internal: stuck with no waiting thread");
  std::map<std::pair<std::string, int>, std::pair<int, const Thr*>> sites;
  const Thr* exited = nullptr;
  int waiting = 0;
  for (int i = 0; i < n; ++i) {
    const Thr& t = w->thr[i];
    if (t.st == Thr::Exited) { if (!exited) exited = &t; continue; }
    ++waiting;
    auto& s = sites[{t.file, t.line}];
    if (!s.first++) s.second = &t;
  }
  if (sites.size() > 1) {
    std::ostringstream o;
    o << "threads wait at different barriers (deadlock):";
    for (auto& kv : sites)
      o << " " << kv.first.first << ":" << kv.first.second << " (" << kv.second.first
        << " threads, e.g. " << dim_str(kv.second.second->tid) << ");";
    block_error(w, o.str());
  }
  if (exited) {
    std::ostringstream o;
    o << bar_op_name(first->op) << " at " << first->file << ":" << first->line << " reached by only "
      << waiting << " of " << n << " threads: " << (n - waiting)
      << " exited before it (early return before a barrier?), e.g. thread " << dim_str(exited->tid);
    block_error(w, o.str());
  }
  int count = 0;
  for (int i = 0; i < n; ++i) count += w->thr[i].val != 0;
  for (int i = 0; i < n; ++i) {
    Thr& t = w->thr[i];
    t.res = t.op == detail::kBarCount ? uint64_t(count)
            : t.op == detail::kBarAnd ? uint64_t(count == n)
            : t.op == detail::kBarOr  ? uint64_t(count > 0)
                                      : 0;
    released.push_back(i);
  }
  push_ordered(w, released);
}

// ---- static shared memory of this worker ----------------------------------------------------------
void find_static_shared(Worker* w) {
  auto lo_addr = reinterpret_cast<uintptr_t>(__start_simt_shared), hi_addr = reinterpret_cast<uintptr_t>(__stop_simt_shared);
  if (!lo_addr || hi_addr <= lo_addr) return;
  volatile char touch = simt_shared_anchor_[0];  // make sure this thread's TLS block exists
  (void)touch;
  struct Q {
    uintptr_t addr;
    char* lo = nullptr;
  } q{reinterpret_cast<uintptr_t>(__start_simt_shared)};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* q = static_cast<Q*>(data);
        const ElfW(Phdr)* tls = nullptr;
        bool mine = false;
        for (int k = 0; k < info->dlpi_phnum; ++k) {
          const auto& ph = info->dlpi_phdr[k];
          if (ph.p_type == PT_TLS) tls = &ph;
          // __start_simt_shared is a link-time address inside the PT_TLS image of its object
          uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
          if (ph.p_type == PT_TLS && q->addr >= lo && q->addr < lo + ph.p_memsz) mine = true;
        }
        if (!mine || !tls || !info->dlpi_tls_data) return 0;
        q->lo = static_cast<char*>(info->dlpi_tls_data) + (q->addr - (info->dlpi_addr + tls->p_vaddr));
        return 1;
      },
      &q);
  size_t bytes = size_t(__stop_simt_shared - __start_simt_shared);
  // sanity: our own anchor must fall inside the region found
  char* anchor = simt_shared_anchor_;
  if (q.lo && anchor >= q.lo && anchor + sizeof simt_shared_anchor_ <= q.lo + bytes) {
    w->shared_lo = q.lo;
    w->shared_bytes = bytes;
  }
}

}  // namespace

// ---- the public emulator API ----------------------------------------------------------------------------
void set_order(Order order, uint64_t seed) {
  g_seed = seed;
  g_order = int(order);
}
void set_order(const std::string& name, uint64_t seed) {
  Order o;
  bool given;
  parse_order(name, &o, &seed, &given);
  set_order(o, seed);
}
Order order() {
  init_order_from_env();
  return Order(g_order.load());
}
uint64_t order_seed() {
  init_order_from_env();
  return g_seed.load();
}
std::string order_name() {
  switch (order()) {
    case Order::forward: return "forward";
    case Order::reverse: return "reverse";
    case Order::random: return "random:" + std::to_string(order_seed());
  }
  return "?";
}
void poison(void* p, size_t bytes) { fill_pattern(p, bytes, kPoison); }
void check_guards() { check_all_guards("found by simt::check_guards()"); }
void* dynamic_shared() { return detail::tl_cur.dsmem; }

namespace detail {

[[noreturn]] __attribute__((noinline)) void outside_kernel(const char* what, const char* file, int line) {
  throw Error(std::string("simt: ") + what + " outside a kernel at " + file + ":" + std::to_string(line));
}

int barrier(const char* file, int line, int op, int pred) {
  Worker* w = tl_worker;
  if (__builtin_expect(!w || !w->cur, 0)) outside_kernel("__syncthreads", file, line);
  Thr* t = w->cur;
  t->st = Thr::WaitBar;
  t->op = op;
  t->file = file;
  t->line = line;
  t->val = uint64_t(pred);
  to_scheduler(w, t->f);
  return int(t->res);
}

[[noreturn]] __attribute__((noinline)) void own_lane_missing(Worker* w, Thr* t, const char* file, int line,
                                                           int op, unsigned mask) {
  int lane = t->lin & 31;
  std::ostringstream o;
  o << warp_op_name(op) << " at " << file << ":" << line << ": thread " << dim_str(t->tid) << " (lane "
    << lane << ") calls it with mask 0x" << std::hex << mask << ", which does not include its own lane";
  block_error(w, o.str());
}

uint64_t warp_op(const char* file, int line, int op, unsigned mask, uint64_t value, int arg, int width) {
  Worker* w = tl_worker;
  if (__builtin_expect(!w || !w->cur, 0)) outside_kernel("warp operation", file, line);
  Thr* t = w->cur;
  int lane = t->lin & 31;
  if (__builtin_expect(!(mask >> lane & 1), 0)) own_lane_missing(w, t, file, line, op, mask);
  t->st = Thr::WaitWarp;
  t->op = op;
  t->file = file;
  t->line = line;
  t->mask = mask;
  t->val = value;
  t->arg = arg;
  t->width = width;
  to_scheduler(w, t->f);
  return t->res;
}

unsigned active_mask() {
  Worker* w = tl_worker;
  if (!w || !w->cur) return 0;
  int base = w->cur->lin & ~31;
  unsigned m = 0;
  for (int k = 0; k < 32 && base + k < w->n; ++k)
    if (w->thr[base + k].st != Thr::Exited) m |= 1u << k;
  return m;
}

}  // namespace detail

namespace {

// Runs one block on this worker. Throws simt::Error on a detected bug.
void run_block(Worker* w, const detail::LaunchInfo& L, uint64_t b) {
  w->L = &L;
  const dim3 g = L.grid, bl = L.block;
  w->bid = uint3{unsigned(b % g.x), unsigned(b / g.x % g.y), unsigned(b / (uint64_t(g.x) * g.y))};
  detail::tl_cur.bid = w->bid;
  detail::tl_cur.bdim = uint3{bl.x, bl.y, bl.z};
  detail::tl_cur.gdim = uint3{g.x, g.y, g.z};
  const int n = int(bl.x * bl.y * bl.z);
  w->n = n;
  w->n_exited = 0;
  w->failed = false;
  if (w->shared_bytes) fill_pattern(w->shared_lo, w->shared_bytes, kPoison);
  if (L.smem) {
    size_t words = (L.smem + 3) / 4;
    if (w->dsmem.size() < words) w->dsmem.resize(words);
    std::fill(w->dsmem.begin(), w->dsmem.begin() + words, kPoison);
    detail::tl_cur.dsmem = w->dsmem.data();
  } else {
    detail::tl_cur.dsmem = nullptr;
  }
  w->thr.resize(n);
  w->order.resize(n);
  for (int i = 0; i < n; ++i) {
    Thr& t = w->thr[i];
    t.tid = uint3{unsigned(i % bl.x), unsigned(i / bl.x % bl.y), unsigned(i / (bl.x * bl.y))};
    t.lin = i;
    t.st = Thr::Unstarted;
    t.f = nullptr;
    w->order[i] = i;
  }
  Order o = Order(g_order.load());
  w->rng = g_seed.load() * 0x9E3779B97F4A7C15ull + b;
  if (o == Order::reverse) std::reverse(w->order.begin(), w->order.end());
  else if (o == Order::random)
    for (int i = n; i > 1; --i) std::swap(w->order[i - 1], w->order[splitmix(w->rng) % unsigned(i)]);
  w->next_unstarted = 0;
  w->runq.clear();
  w->runq_head = 0;
  w->fibers_used = 0;
  w->cur = nullptr;
  for (;;) {
    if (w->runq_head < w->runq.size()) {
      Thr& t = w->thr[w->runq[w->runq_head++]];
      t.st = Thr::Running;
      w->cur = &t;
      detail::tl_cur.tid = t.tid;
      to_fiber(w, t.f);
    } else if (w->next_unstarted < size_t(n)) {
      if (w->fibers_used == w->fibers.size()) w->fibers.push_back(new_fiber(w));
      Fiber* f = w->fibers[w->fibers_used++];
      fiber_reset(f);
      to_fiber(w, f);
    } else if (w->n_exited == n) {
      break;
    } else {
      w->runq.clear();
      w->runq_head = 0;
      resolve(w);
    }
    if (w->failed) throw Error(w->error);
  }
  w->cur = nullptr;
}

// ---- worker pool --------------------------------------------------------------------------------------------
struct Launch {
  const detail::LaunchInfo* L;
  uint64_t blocks;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex m;
  std::string error;
  std::atomic<uint64_t> threads_run{0};
};

struct Pool {
  std::mutex m;
  std::condition_variable cv, done_cv;
  Launch* job = nullptr;
  uint64_t generation = 0;
  int busy = 0;
  std::vector<std::thread> threads;
  int size = 0;

  bool poison_shared = true;
  void start() {
    if (size) return;
    poison_shared = env_int("CONVNET_SIMT_POISON_SHARED", 1, 0, 1) != 0;
    size = env_int("CONVNET_EMU_THREADS", 2, 1, 256);
    for (int i = 0; i < size; ++i) threads.emplace_back([this] { loop(); });
    for (auto& t : threads) t.detach();
  }
  void loop() {
    Worker* w = new Worker;
    tl_worker = w;
    if (poison_shared) find_static_shared(w);
    if (w->shared_bytes) g_shared_poisoned = true;
    uint64_t seen = 0;
    for (;;) {
      Launch* job;
      {
        std::unique_lock<std::mutex> lk(m);
        cv.wait(lk, [&] { return generation != seen; });
        seen = generation;
        job = this->job;
      }
      work(w, *job);
      {
        std::lock_guard<std::mutex> lk(m);
        if (--busy == 0) done_cv.notify_all();
      }
    }
  }
  void work(Worker* w, Launch& J) {
    uint64_t sw0 = w->switches, threads = 0;
    while (!J.failed.load(std::memory_order_relaxed)) {
      uint64_t b = J.next.fetch_add(1);
      if (b >= J.blocks) break;
      try {
        run_block(w, *J.L, b);
        threads += uint64_t(w->n);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lk(J.m);
        if (!J.failed.exchange(true)) J.error = e.what();
      }
    }
    w->cur = nullptr;
    st_switches += w->switches - sw0;
    st_threads += threads;
  }
  void run(Launch& J) {
    std::unique_lock<std::mutex> lk(m);
    job = &J;
    busy = size;
    ++generation;
    cv.notify_all();
    done_cv.wait(lk, [&] { return busy == 0; });
    job = nullptr;
  }
};
Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: detached workers use it until the process ends
  return *p;
}
std::mutex g_launch_mutex;

struct FuncAttrs {
  std::mutex m;
  std::map<const void*, int> max_dynamic_smem;
};
FuncAttrs& func_attrs() {
  static FuncAttrs* f = new FuncAttrs;
  return *f;
}
constexpr size_t kDefaultDynamicSmem = 48 * 1024, kMaxDynamicSmem = 96 * 1024;

}  // namespace

int num_workers() {
  std::lock_guard<std::mutex> lk(g_launch_mutex);
  pool().start();
  return pool().size;
}

Stats stats() {
  return Stats{st_launches.load(), st_blocks.load(), st_threads.load(), st_switches.load(),
               g_shared_poisoned.load()};
}

namespace detail {

void check_launch(const LaunchInfo& L) {
  auto bad = [&](const std::string& what) {
    std::ostringstream o;
    o << "simt: invalid launch of kernel " << L.name << " at " << L.file << ":" << L.line << ": "
      << what << " (grid " << dim_str(L.grid) << ", block " << dim_str(L.block) << ", "
      << L.smem << " bytes of dynamic shared memory)";
    throw Error(o.str());
  };
  const dim3 g = L.grid, b = L.block;
  if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z) bad("a dimension is zero");
  if (uint64_t(b.x) * b.y * b.z > 1024) bad("more than 1024 threads per block");
  if (b.x > 1024 || b.y > 1024 || b.z > 64) bad("block dimension above (1024, 1024, 64)");
  if (g.y > 65535 || g.z > 65535) bad("grid y or z above 65535");
  if (g.x > 2147483647u) bad("grid x above 2^31-1");
  size_t limit = kDefaultDynamicSmem;
  {
    auto& fa = func_attrs();
    std::lock_guard<std::mutex> lk(fa.m);
    auto it = fa.max_dynamic_smem.find(L.func);
    if (it != fa.max_dynamic_smem.end()) limit = std::min<size_t>(size_t(it->second), kMaxDynamicSmem);
  }
  if (L.smem > limit) {
    std::ostringstream o;
    o << "dynamic shared memory above " << limit
      << " bytes (raise it with cudaFuncSetAttribute(kernel, "
         "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), at most "
      << kMaxDynamicSmem << ")";
    bad(o.str());
  }
}

void run(const LaunchInfo& L) {
  init_order_from_env();
  check_launch(L);
  const dim3 g = L.grid;
  Launch J;
  J.L = &L;
  J.blocks = uint64_t(g.x) * g.y * g.z;
  {
    std::lock_guard<std::mutex> lk(g_launch_mutex);
    Pool& P = pool();
    P.start();
    P.run(J);
  }
  ++st_launches;
  st_blocks += J.blocks;
  std::ostringstream ctx;
  ctx << "by kernel " << L.name << " launched at " << L.file << ":" << L.line;
  if (J.failed) {
    // guards too, but the kernel's own error comes first
    std::string extra;
    try {
      check_all_guards(ctx.str());
    } catch (const std::exception& e) {
      extra = std::string("\n") + e.what();
    }
    throw Error(J.error + extra);
  }
  check_all_guards(ctx.str());
}

}  // namespace detail
}  // namespace simt

// ---- host waits and pinned host memory -------------------------------------------------------------------------
namespace simt {
namespace {
std::atomic<uint64_t> hw_stream{0}, hw_event{0}, hw_device{0}, hw_memcpy{0}, hw_pageable{0};

// Pinned host blocks (cudaHostAlloc / cudaMallocHost): start -> size.
std::mutex g_pinned_mutex;
std::map<uintptr_t, size_t>& pinned_blocks() {
  static auto* m = new std::map<uintptr_t, size_t>;
  return *m;
}
// True when [p, p + bytes) lies inside one pinned block.
bool is_pinned(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lk(g_pinned_mutex);
  auto a = reinterpret_cast<uintptr_t>(p);
  auto it = pinned_blocks().upper_bound(a);
  if (it == pinned_blocks().begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}
}  // namespace

HostWaits host_waits() {
  return HostWaits{hw_stream.load(), hw_event.load(), hw_device.load(), hw_memcpy.load(),
                   hw_pageable.load()};
}
void reset_host_waits() {
  hw_stream = hw_event = hw_device = hw_memcpy = hw_pageable = 0;
}
}  // namespace simt

// ---- CUDA runtime API --------------------------------------------------------------------------------------------
using simt::devices;
using simt::fail;

// An event counts the records issued on it (`issued`) and those that have run (`completed`); a
// wait names the count issued when it was called, as cudaStreamWaitEvent captures the event's
// latest record.
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
  bool recorded = false;
  uint64_t issued = 0, completed = 0;
};

namespace simt {
namespace {
struct StreamOp {
  enum Kind { work, record, wait } kind;
  std::function<void()> fn;  // work
  CUevent_st* event;         // record, wait
  uint64_t count;            // record: this record's number; wait: the record waited for
  std::string what;
};
}  // namespace
}  // namespace simt

struct CUstream_st {
  int dev;
  uint64_t serial = 0;  // creation order
  std::deque<simt::StreamOp> queue;
};

// ---- deferred streams -------------------------------------------------------------------------------------
namespace simt {
namespace {

std::mutex g_stream_mutex;  // the stream list and every queue
std::mutex g_drain_mutex;   // one host thread drains at a time
thread_local bool tl_draining = false;
std::atomic<int> g_stream_order{-1};  // -1: not read from the environment yet
uint64_t g_stream_rng = 0;
uint64_t g_stream_seed = 0;
uint64_t g_stream_serial = 0;

std::vector<CUstream_st*>& all_streams() {  // in creation order
  static std::vector<CUstream_st*> v;
  return v;
}

CUstream_st* default_stream(int dev) {  // caller holds g_stream_mutex
  static CUstream_st* s[64] = {};
  if (!s[dev]) {
    s[dev] = new CUstream_st{dev, ++g_stream_serial, {}};
    all_streams().push_back(s[dev]);
  }
  return s[dev];
}

void parse_stream_order(const std::string& text, uint64_t seed) {
  std::string name = text, arg;
  size_t c = text.find(':');
  if (c != std::string::npos) name = text.substr(0, c), arg = text.substr(c + 1);
  StreamOrder o;
  if (name == "sync") o = StreamOrder::sync;
  else if (name == "deferred") o = StreamOrder::deferred;
  else if (name == "reversed") o = StreamOrder::reversed;
  else if (name == "random") o = StreamOrder::random;
  else throw Error("simt: unknown stream order '" + text + "' (sync, deferred, reversed or random[:seed])");
  if (!arg.empty()) {
    char* end = nullptr;
    seed = std::strtoull(arg.c_str(), &end, 10);
    if (*end || o != StreamOrder::random) throw Error("simt: bad stream order '" + text + "'");
  }
  g_stream_seed = g_stream_rng = seed;
  g_stream_order = int(o);
}

StreamOrder stream_order() {
  if (g_stream_order.load() < 0) {
    std::lock_guard<std::mutex> lk(g_stream_mutex);
    if (g_stream_order.load() < 0) {
      const char* v = std::getenv("CONVNET_SIMT_STREAMS");
      parse_stream_order(v && *v ? v : "sync", 0);
    }
  }
  return StreamOrder(g_stream_order.load());
}

void clear_queues() {  // after an error: what is queued behind it will not run
  std::lock_guard<std::mutex> lk(g_stream_mutex);
  for (CUstream_st* s : all_streams()) s->queue.clear();
}

// Runs every queued operation, choosing among the streams whose next operation can run.
void drain() {
  if (tl_draining) return;  // a synchronous call made by queued work: already in order
  std::lock_guard<std::mutex> drain_lock(g_drain_mutex);
  tl_draining = true;
  struct Reset {
    ~Reset() { tl_draining = false; }
  } reset;
  for (;;) {
    std::unique_lock<std::mutex> lk(g_stream_mutex);
    std::vector<CUstream_st*> ready;
    bool pending = false;
    for (CUstream_st* s : all_streams()) {
      if (s->queue.empty()) continue;
      pending = true;
      const StreamOp& op = s->queue.front();
      if (op.kind != StreamOp::wait || op.event->completed >= op.count) ready.push_back(s);
    }
    if (!pending) return;
    if (ready.empty()) {
      // Cannot happen while a wait names a record issued before it (cudaStreamWaitEvent's
      // rule, kept by cudaStreamWaitEvent below): checked so that a runtime bug cannot hang.
      std::ostringstream o;
      o << "simt: streams deadlocked, every stream with work waits on an event:";
      for (CUstream_st* s : all_streams())
        if (!s->queue.empty())
          o << " [stream " << s->serial << " of device " << s->dev << ": " << s->queue.front().what
            << "]";
      lk.unlock();
      clear_queues();
      throw Error(o.str());
    }
    CUstream_st* s = ready.front();
    switch (StreamOrder(g_stream_order.load())) {
      case StreamOrder::reversed: s = ready.back(); break;
      case StreamOrder::random: s = ready[splitmix(g_stream_rng) % ready.size()]; break;
      default: break;
    }
    StreamOp op = std::move(s->queue.front());
    s->queue.pop_front();
    int dev = s->dev;
    lk.unlock();
    if (op.kind == StreamOp::record) {
      op.event->completed = std::max(op.event->completed, op.count);
      op.event->t = std::chrono::steady_clock::now();
      op.event->recorded = true;
    } else if (op.kind == StreamOp::work) {
      int saved = tl_device;
      tl_device = dev;
      try {
        op.fn();
      } catch (...) {
        tl_device = saved;
        clear_queues();
        throw;
      }
      tl_device = saved;
    }
  }
}

void push(cudaStream_t stream, StreamOp op) {
  std::lock_guard<std::mutex> lk(g_stream_mutex);
  CUstream_st* s = stream ? stream : default_stream(tl_device);
  s->queue.push_back(std::move(op));
}

}  // namespace

void set_stream_order(const std::string& name, uint64_t seed) {
  drain();  // what is queued runs under the order it was queued with
  std::lock_guard<std::mutex> lk(g_stream_mutex);
  parse_stream_order(name, seed);
}

std::string stream_order_name() {
  switch (stream_order()) {
    case StreamOrder::sync: return "sync";
    case StreamOrder::deferred: return "deferred";
    case StreamOrder::reversed: return "reversed";
    case StreamOrder::random: return "random:" + std::to_string(g_stream_seed);
  }
  return "?";
}

namespace detail {
bool streams_deferred() { return stream_order() != StreamOrder::sync; }
void enqueue(cudaStream_t stream, std::string what, std::function<void()> work) {
  push(stream, StreamOp{StreamOp::work, std::move(work), nullptr, 0, std::move(what)});
}
}  // namespace detail
}  // namespace simt

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorPeerAccessAlreadyEnabled: return "cudaErrorPeerAccessAlreadyEnabled";
    case cudaErrorPeerAccessNotEnabled: return "cudaErrorPeerAccessNotEnabled";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorUnknown: return "cudaErrorUnknown";
  }
  return "cudaErrorUnknown";
}

// The text of the most recent error of this code on this host thread carries the details
// (which pointer, which allocation); otherwise the generic text.
const char* cudaGetErrorString(cudaError_t e) {
  using simt::tl_last_detail;
  if (e != cudaSuccess && !simt::tl_last_detail.empty() &&
      simt::tl_last_detail.compare(0, std::strlen(cudaGetErrorName(e)), cudaGetErrorName(e)) == 0)
    return tl_last_detail.c_str();
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorPeerAccessAlreadyEnabled: return "peer access is already enabled";
    case cudaErrorPeerAccessNotEnabled: return "peer access has not been enabled";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaGetLastError() {
  cudaError_t e = simt::tl_last_error;
  simt::tl_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return simt::tl_last_error; }

cudaError_t cudaGetDeviceCount(int* n) {
  auto& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  D.init();
  *n = D.count;
  return cudaSuccess;
}

static bool valid_device(int d) {
  int n;
  cudaGetDeviceCount(&n);
  return d >= 0 && d < n;
}

cudaError_t cudaSetDevice(int dev) {
  if (!valid_device(dev)) return fail(cudaErrorInvalidDevice, "cudaSetDevice(" + std::to_string(dev) + ")");
  simt::tl_device = dev;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = simt::tl_device;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  ++simt::hw_device;
  simt::drain();
  return cudaSuccess;
}
cudaError_t cudaDeviceReset() { return cudaSuccess; }

cudaError_t cudaDeviceCanAccessPeer(int* can, int dev, int peer) {
  if (!valid_device(dev) || !valid_device(peer)) return fail(cudaErrorInvalidDevice, "cudaDeviceCanAccessPeer");
  *can = dev != peer;
  return cudaSuccess;
}
cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned flags) {
  if (!valid_device(peer) || peer == simt::tl_device || flags)
    return fail(peer == simt::tl_device ? cudaErrorInvalidDevice : cudaErrorInvalidValue,
                "cudaDeviceEnablePeerAccess(" + std::to_string(peer) + ")");
  auto& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  if (D.peer[simt::tl_device][peer])
    return fail(cudaErrorPeerAccessAlreadyEnabled, "device " + std::to_string(simt::tl_device) + " -> " + std::to_string(peer));
  D.peer[simt::tl_device][peer] = true;
  return cudaSuccess;
}
cudaError_t cudaDeviceDisablePeerAccess(int peer) {
  if (!valid_device(peer)) return fail(cudaErrorInvalidDevice, "cudaDeviceDisablePeerAccess");
  auto& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  if (!D.peer[simt::tl_device][peer]) return fail(cudaErrorPeerAccessNotEnabled, "cudaDeviceDisablePeerAccess");
  D.peer[simt::tl_device][peer] = false;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (!valid_device(dev)) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties(" + std::to_string(dev) + ")");
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "SIMT emulator (CPU) device %d", dev);
  p->totalGlobalMem = size_t(16) << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 96 * 1024;
  p->sharedMemPerMultiprocessor = 100 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
  p->maxThreadsPerMultiProcessor = 2048;
  p->multiProcessorCount = simt::num_workers();
  p->major = 8, p->minor = 0;
  p->clockRate = 1000000;
  p->l2CacheSize = 4 << 20;
  p->unifiedAddressing = 1;
  p->canMapHostMemory = 1;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  auto& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  D.init();
  size_t total = size_t(16) << 30;
  *total_bytes = total;
  *free_bytes = total - std::min(total, D.used[simt::tl_device]);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  using simt::kAlign;
  using simt::kGuardBytes;
  size_t cap = (bytes + kAlign - 1) / kAlign * kAlign;
  if (cap < bytes || cap > (size_t(1) << 40)) return fail(cudaErrorMemoryAllocation, std::to_string(bytes) + " bytes");
  char* raw = static_cast<char*>(std::aligned_alloc(kAlign, cap + 2 * kGuardBytes));
  if (!raw) return fail(cudaErrorMemoryAllocation, std::to_string(bytes) + " bytes");
  auto& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  D.init();
  simt::Alloc a{raw, raw + kGuardBytes, bytes, cap, simt::tl_device, ++D.serial};
  simt::set_guards(a);
  simt::poison(a.body, bytes);
  D.allocs[a.dev][reinterpret_cast<uintptr_t>(a.body)] = a;
  D.used[a.dev] += bytes;
  *p = a.body;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  simt::drain();  // as cudaFree waits for the device: queued work may still use the block
  auto& D = devices();
  std::unique_lock<std::mutex> lk(D.m);
  int dev = -1;
  const simt::Alloc* a = D.find(p, &dev);
  if (!a || a->body != p) {
    std::ostringstream o;
    o << "cudaFree(" << p << "): ";
    if (a) o << "points inside " << simt::describe(*a) << ", not at its start";
    else o << "not a pointer returned by cudaMalloc (or already freed)";
    return fail(cudaErrorInvalidDevicePointer, o.str());
  }
  if (dev != simt::tl_device) {
    std::ostringstream o;
    o << "cudaFree(" << p << ") on device " << simt::tl_device << ": it is " << simt::describe(*a)
      << "; set its device first";
    return fail(cudaErrorInvalidDevicePointer, o.str());
  }
  std::string dmg = simt::guard_damage(*a);
  simt::Alloc copy = *a;
  D.allocs[dev].erase(reinterpret_cast<uintptr_t>(p));
  D.used[dev] -= copy.bytes;
  lk.unlock();
  std::free(copy.raw);
  if (!dmg.empty())
    throw simt::Error("simt: out-of-bounds write found by cudaFree: " + simt::describe(copy) + ": " + dmg);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) {
  *p = nullptr;
  if (bytes > (size_t(1) << 40)) return fail(cudaErrorMemoryAllocation, "cudaHostAlloc of " + std::to_string(bytes) + " bytes");
  const size_t size = (bytes + 4095) / 4096 * 4096 + 4096;
  *p = std::aligned_alloc(4096, size);
  if (!*p) return fail(cudaErrorMemoryAllocation, "cudaHostAlloc");
  std::lock_guard<std::mutex> lk(simt::g_pinned_mutex);
  simt::pinned_blocks()[reinterpret_cast<uintptr_t>(*p)] = size;
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }
cudaError_t cudaFreeHost(void* p) {
  if (!p) return cudaSuccess;
  simt::drain();  // queued copies may still read or write it
  {
    std::lock_guard<std::mutex> lk(simt::g_pinned_mutex);
    if (!simt::pinned_blocks().erase(reinterpret_cast<uintptr_t>(p))) {
      std::ostringstream o;
      o << "cudaFreeHost(" << p << "): not a pointer returned by cudaHostAlloc (or already freed)";
      return fail(cudaErrorInvalidValue, o.str());
    }
  }
  std::free(p);
  return cudaSuccess;
}

namespace {
// Checks that [p, p + bytes) is device memory (on device `dev` if dev >= 0). Caller holds D.m.
bool check_range(const char* fn, const char* which, const void* p, size_t bytes, int dev, cudaError_t* err) {
  auto& D = devices();
  int owner = -1;
  const simt::Alloc* a = D.find(p, &owner);
  std::ostringstream o;
  o << fn << ": " << which << " " << p;
  if (!a) {
    o << " is not device memory";
    *err = fail(cudaErrorInvalidValue, o.str());
    return false;
  }
  size_t off = size_t(static_cast<const char*>(p) - a->body);
  if (off + bytes > a->bytes) {
    o << " + " << bytes << " bytes runs past the end of " << simt::describe(*a) << " (offset " << off << ")";
    *err = fail(cudaErrorInvalidValue, o.str());
    return false;
  }
  if (dev >= 0 && owner != dev) {
    o << " is on device " << owner << ", not device " << dev << " (" << simt::describe(*a) << ")";
    *err = fail(cudaErrorInvalidDevice, o.str());
    return false;
  }
  return true;
}
bool is_device(const void* p) { return devices().find(p) != nullptr; }
}  // namespace

namespace {
// The checks of cudaMemcpy; the copy itself is left to the caller.
cudaError_t check_memcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  {
    auto& D = devices();
    std::lock_guard<std::mutex> lk(D.m);
    D.init();
    cudaError_t e = cudaSuccess;
    bool dd = is_device(dst), sd = is_device(src);
    switch (kind) {
      case cudaMemcpyHostToHost:
        if (dd || sd) return fail(cudaErrorInvalidValue, "cudaMemcpy HostToHost with a device pointer");
        break;
      case cudaMemcpyHostToDevice:
        if (sd) return fail(cudaErrorInvalidValue, "cudaMemcpy HostToDevice: the source is device memory");
        if (!check_range("cudaMemcpy HostToDevice", "destination", dst, bytes, -1, &e)) return e;
        break;
      case cudaMemcpyDeviceToHost:
        if (dd) return fail(cudaErrorInvalidValue, "cudaMemcpy DeviceToHost: the destination is device memory");
        if (!check_range("cudaMemcpy DeviceToHost", "source", src, bytes, -1, &e)) return e;
        break;
      case cudaMemcpyDeviceToDevice:
        if (!check_range("cudaMemcpy DeviceToDevice", "source", src, bytes, -1, &e)) return e;
        if (!check_range("cudaMemcpy DeviceToDevice", "destination", dst, bytes, -1, &e)) return e;
        break;
      case cudaMemcpyDefault:
        if (sd && !check_range("cudaMemcpy", "source", src, bytes, -1, &e)) return e;
        if (dd && !check_range("cudaMemcpy", "destination", dst, bytes, -1, &e)) return e;
        break;
      default:
        return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpy kind " + std::to_string(int(kind)));
    }
  }
  return cudaSuccess;
}
cudaError_t check_memset(void* p, size_t bytes) {
  auto& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  cudaError_t e;
  if (!check_range("cudaMemset", "pointer", p, bytes, -1, &e)) return e;
  return cudaSuccess;
}
cudaError_t check_peer(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes) {
  if (!valid_device(dst_dev) || !valid_device(src_dev))
    return fail(cudaErrorInvalidDevice, "cudaMemcpyPeer: device " + std::to_string(dst_dev) + " or " + std::to_string(src_dev));
  auto& D = devices();
  std::lock_guard<std::mutex> lk(D.m);
  cudaError_t e;
  if (!check_range("cudaMemcpyPeer", "source", src, bytes, src_dev, &e)) return e;
  if (!check_range("cudaMemcpyPeer", "destination", dst, bytes, dst_dev, &e)) return e;
  return cudaSuccess;
}
// An async copy: checked now, run now (sync streams) or queued on `stream`.
cudaError_t async_copy(cudaStream_t stream, const char* what, void* dst, const void* src, size_t bytes) {
  if (!simt::detail::streams_deferred()) {
    std::memmove(dst, src, bytes);
    return cudaSuccess;
  }
  std::ostringstream o;
  o << what << " of " << bytes << " bytes " << src << " -> " << dst;
  simt::detail::enqueue(stream, o.str(), [=] { std::memmove(dst, src, bytes); });
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lk(devices().m);
    if (!is_device(dst) || !is_device(src)) ++simt::hw_memcpy;  // a host side: the host waits
  }
  simt::drain();
  if (cudaError_t e = check_memcpy(dst, src, bytes, kind)) return e;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t e = check_memcpy(dst, src, bytes, kind)) return e;
  const void* host = nullptr;
  {
    std::lock_guard<std::mutex> lk(devices().m);
    if (!is_device(src)) host = src;
    else if (!is_device(dst)) host = dst;
  }
  if (host && !simt::is_pinned(host, bytes)) {
    // Pageable: CUDA copies through a staging buffer and returns when the host side is done
    // with, so the copy is ordered after the stream's work and the host waits for it.
    ++simt::hw_pageable;
    simt::drain();
    std::memmove(dst, src, bytes);
    return cudaSuccess;
  }
  return async_copy(s, "cudaMemcpyAsync", dst, src, bytes);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  ++simt::hw_memcpy;
  simt::drain();
  if (cudaError_t e = check_memset(p, bytes)) return e;
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s) {
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t e = check_memset(p, bytes)) return e;
  if (!simt::detail::streams_deferred()) {
    std::memset(p, value, bytes);
    return cudaSuccess;
  }
  simt::detail::enqueue(s, "cudaMemsetAsync", [=] { std::memset(p, value, bytes); });
  return cudaSuccess;
}

cudaError_t cudaMemcpyPeer(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes) {
  if (bytes == 0 && valid_device(dst_dev) && valid_device(src_dev)) return cudaSuccess;
  ++simt::hw_memcpy;
  simt::drain();
  if (cudaError_t e = check_peer(dst, dst_dev, src, src_dev, bytes)) return e;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_dev, const void* src, int src_dev, size_t bytes, cudaStream_t s) {
  if (bytes == 0 && valid_device(dst_dev) && valid_device(src_dev)) return cudaSuccess;
  if (cudaError_t e = check_peer(dst, dst_dev, src, src_dev, bytes)) return e;
  return async_copy(s, "cudaMemcpyPeerAsync", dst, src, bytes);
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  std::lock_guard<std::mutex> lk(simt::g_stream_mutex);
  *s = new CUstream_st{simt::tl_device, ++simt::g_stream_serial, {}};
  simt::all_streams().push_back(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy(0)");
  simt::drain();
  {
    std::lock_guard<std::mutex> lk(simt::g_stream_mutex);
    auto& v = simt::all_streams();
    v.erase(std::find(v.begin(), v.end(), s));
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  ++simt::hw_stream;
  simt::drain();
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t) {
  ++simt::hw_stream;
  simt::drain();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: null event");
  if (simt::detail::streams_deferred() && e->issued > 0)
    simt::push(s, simt::StreamOp{simt::StreamOp::wait, {}, e, e->issued,
                                 "wait for record " + std::to_string(e->issued) + " of event " +
                                     std::to_string(reinterpret_cast<uintptr_t>(e))});
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: null event");
  uint64_t n = ++e->issued;
  if (simt::detail::streams_deferred()) {
    simt::push(s, simt::StreamOp{simt::StreamOp::record, {}, e, n, "record"});
    return cudaSuccess;
  }
  e->completed = n;
  e->t = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: null event");
  ++simt::hw_event;
  simt::drain();
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventQuery: null event");
  std::lock_guard<std::mutex> lk(simt::g_stream_mutex);
  return e->completed >= e->issued ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!a || !b) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: null event");
  if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: event not recorded");
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  simt::drain();  // queued records and waits name it
  delete e;
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttributeImpl(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || size_t(value) > simt::kMaxDynamicSmem)
      return fail(cudaErrorInvalidValue, "cudaFuncAttributeMaxDynamicSharedMemorySize " + std::to_string(value) +
                                             " above " + std::to_string(simt::kMaxDynamicSmem));
    auto& fa = simt::func_attrs();
    std::lock_guard<std::mutex> lk(fa.m);
    fa.max_dynamic_smem[func] = value;
  }
  return cudaSuccess;
}
