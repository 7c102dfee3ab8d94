// The blocked SGEMM driver (BLIS loop order), shared by every micro-kernel: each ISA file
// (gemm_avx512.cpp, gemm_avx2.cpp, gemm_portable.cpp) includes it with its own Kernel, so the
// driver is compiled with that file's ISA flags.
//
//   C (m, n) = alpha * A (m, k) * B (k, n) + beta * C,  C row-major with row stride ldc
//
// Loops (outer to inner): n in NC blocks -> k in KC blocks (pack B: KC x NC, lives in L2/L3)
// -> m in MC blocks (pack A: MC x KC, lives in L2) -> NR columns (one B micro-panel, KC x NR,
// stays in L1 while...) -> MR rows: the micro-kernel, an MR x NR tile of C in registers.
//
// Threads run the serial loops with their own B packing buffers. When m <= n they take blocks of
// columns from a shared counter: on a shared machine a core slowed by another job then simply
// takes fewer blocks, where fixed halves would leave the other core waiting. A is then packed once
// for the team (TeamA): each thread first packs the MC x KC blocks it takes from another counter,
// so each packs about 1/threads of A, where every thread used to pack all of it (or, too large to
// keep, all of it again for every column block); a thread woken late finds most of it packed, and
// waits only for a block the other is still packing when it needs it. Otherwise (and where the
// column blocks would be narrow while each thread's rows fill an A block) each thread takes a
// contiguous share of m; k is split when it dwarfs m and n (convolution weight gradients: the
// reduction runs over every image and position), each thread summing a fixed share into its own
// buffer, so the bits never depend on timing.
//
// Kernel provides MR, NR, the cache blocks MC, KC, NC (constants, or blocking() returning them when
// they are worked out at run time from the machine's caches) and
//   run(kc, a_panel, b_panel, c, ldc, alpha, beta, rows, cols): C[rows x cols] tile of
//   alpha * a_panel * b_panel (+ beta * C; beta == 0 never reads C).
//
// With few columns (kInPlaceMaxPanels) and A's rows contiguous in memory (the FC forward's w^T),
// kernels with run_strided_a read A in place, k steps a row stride apart, instead of packing it,
// one tile row at a time: its tiles over every B panel in turn, while the first of them
// prefetches the next tile row's A into L2. Where those k steps all fall into one L1 set (a
// multiple of 4 KB apart), kernels with run_strided_a_packing (AVX2) pack A instead: under more
// than half of kInPlaceMaxPanels B panels in blocks of whole cache lines, each block during the
// tiles of the one before it (packs_ahead); under fewer, in the first tile of each tile row,
// which reads A in place and writes its panel for the others (tile_packs_a). Kernels with
// run_rows_a likewise read a row-major A (k contiguous) in place where m > n
// (gemm_reads_rows_a_in_place), in deeper k blocks.
//
// B panels whose k steps are contiguous rows somewhere (GemmOperand::row_pointers: the images of
// an implicit-GEMM convolution, sgemm's B stored (k, n)) are packed by plain row copies rather
// than read in place (and never where A is read in place, whose kernels do not gather): rows
// of images lie 512 bytes apart (128 images), so in place they fall into a quarter of the L1
// sets and the panel spills to L2 at every tile; packed, it stays in L1. A kernel that has
// run_gather(kc, a, row_pointers, packed_b, c, ldc, alpha, beta, cols) copies them in the
// panel's first full tile, which reads the rows in place: with few rows of A (m = 48 or 128 per
// group in conv2) a separate copy pass, waiting on rows from L3, took 7-16% of the time.
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <thread>
#include <type_traits>
#include <vector>

#include "cache_info.h"
#include "gemm_cpu.h"
#include "gemm_pack.h"

namespace convnet {
namespace gemm_detail {

struct Blocking {
  int64_t mc, kc, nc;
};

template <class K, class = void>
struct has_blocking : std::false_type {};
template <class K>
struct has_blocking<K, std::void_t<decltype(&K::blocking)>> : std::true_type {};

template <class K>
Blocking blocking_of() {
  if constexpr (has_blocking<K>::value)
    return K::blocking();
  else
    return Blocking{K::MC, K::KC, K::NC};
}

// The kernel's blocking with NC lowered to the problem's max_nc (whole NR panels), if it sets one.
template <class K>
Blocking blocking_for(const GemmProblem& p) {
  Blocking b = blocking_of<K>();
  if (p.max_nc > 0) b.nc = std::min(b.nc, std::max<int64_t>(K::NR, p.max_nc / K::NR * K::NR));
  return b;
}

template <class K, class = void>
struct has_run_gather : std::false_type {};
template <class K>
struct has_run_gather<K, std::void_t<decltype(&K::run_gather)>> : std::true_type {};

template <class K, class = void>
struct has_run_strided_a : std::false_type {};
template <class K>
struct has_run_strided_a<K, std::void_t<decltype(&K::run_strided_a)>> : std::true_type {};

template <class K, class = void>
struct has_run_strided_a_packing : std::false_type {};
template <class K>
struct has_run_strided_a_packing<K, std::void_t<decltype(&K::run_strided_a_packing)>>
    : std::true_type {};

template <class K, class = void>
struct has_run_rows_a : std::false_type {};
template <class K>
struct has_run_rows_a<K, std::void_t<decltype(&K::run_rows_a)>> : std::true_type {};

// One MR x NR tile of C: the micro-kernel, reading the B panel in place through its row
// pointers and packing it on the way when `gather` (kernels with run_gather), reading A in
// place with k steps a_step apart when a_step is not MR (kernels with run_strided_a; A in place
// with steps MR apart is a packed panel's layout, which run reads as it is), then prefetching
// a_next's kc steps (MR rows, a_step apart) into L2 when a_next is not null.
template <class K>
void micro_tile(bool gather, int64_t kc, const float* ap, int64_t a_step, int64_t a_row,
                const float* a_next, const float* bp, const float* const* rows_b, float* pb,
                float* ct, int64_t ldc, float alpha, float beta, int rows, int cols) {
  if constexpr (has_run_rows_a<K>::value) {
    if (a_row) return K::run_rows_a(kc, ap, a_row, a_next, bp, ct, ldc, alpha, beta, rows, cols);
  }
  if constexpr (has_run_strided_a<K>::value) {
    if (a_step != K::MR)
      return K::run_strided_a(kc, ap, a_step, a_next, bp, ct, ldc, alpha, beta, rows, cols);
  }
  if constexpr (has_run_gather<K>::value) {
    if (gather) return K::run_gather(kc, ap, rows_b, pb, ct, ldc, alpha, beta, cols);
  }
  K::run(kc, ap, bp, ct, ldc, alpha, beta, rows, cols);
}

// A is read in place rather than packed (GemmOperand::rows_in_place) when the columns make at
// most kInPlaceMaxPanels B panels (gemm_cpu.h), so that a packed A element would be read that few
// times: the FC forward's 128 images (4 panels of 14x32, 8 of 6x16). There the pack was a fifth
// to a quarter of the time (one thread, Zen 4): it ran at 5-7 GB/s even with its source in L2
// (its stores alone at about 7 GB/s), against the 1.6 GB/s of weights the FMAs consume. Square
// GEMMs have 32 panels or more and pack as before; nothing between 8 and 32 was measured. (AVX2's
// fc6/fc7, whose k steps share an L1 set, pack A instead: pack_part_ahead and
// run_strided_a_packing.) Kernels with run_rows_a also read A in place when its k steps are
// contiguous (GemmOperand::rows_k_contiguous: the FC data gradient's w), where the pack is a
// transpose, and then at any column count when k is short (gemm_reads_rows_a_in_place).

// The blocking for A read in place with k contiguous (run_rows_a): no A block to keep in L2, so
// the k block deepens until the B block (every column: at most kInPlaceMaxPanels panels; with
// more, k is within kRowsAInPlaceMaxK and keeps the kernel's KC) fills half of L2, up to
// kRowsAMaxKC steps; C, read and written once per k block, is then swept
// fewer times. The FC data gradient at 128 images (6x64; AMD Zen 5, one thread, thread CPU
// time, alternating in one process): KC 1024 ran fc6-fc8 1.02-1.06x as fast as 512, 2048 (a
// 1 MB B block) 0.93-0.98x as fast as 1024.
constexpr int64_t kRowsAMaxKC = 1024;
template <class K>
Blocking rows_a_blocking(const GemmProblem& p) {
  Blocking b = blocking_for<K>(p);
  const int64_t panel_bytes = (p.n + K::NR - 1) / K::NR * K::NR * int64_t(sizeof(float));
  int64_t kc = std::clamp<int64_t>(cache_sizes().l2 / 2 / panel_bytes, b.kc, kRowsAMaxKC);
  b.kc = kc / 8 * 8;
  return b;
}

// Part `part` of `parts` of `runs` runs of `len` floats, `stride` floats apart from a, into L2:
// the next A block's source, a share per micro-tile (packed by transposing rows, k contiguous:
// a run is one row of its k steps).
inline void prefetch_runs(const float* a, int64_t stride, int64_t runs, int64_t len,
                          int64_t part, int64_t parts) {
  const int64_t bytes = len * int64_t(sizeof(float));
  for (int64_t r = runs * part / parts, e = runs * (part + 1) / parts; r < e; ++r) {
    const char* run = reinterpret_cast<const char*>(a + r * stride);
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(run + b, 0, 2);
    __builtin_prefetch(run + bytes - 1, 0, 2);
  }
}

// The A blocks packed ahead (gemm_serial's packs_ahead), where A's k steps are a multiple of 4 KB
// apart (fc6 and fc7's weights in the forward pass, rows = outputs contiguous): the fewest rows
// that make whole tile rows and whole cache lines (48 for 6x16), so that each line read is used
// whole. Against 48 rows, fc6 / fc7 forward with 96 ran 0.95 / 0.95x as fast on two threads
// (0.94 / 1.00x on one), with 24 0.98 / 0.99x (0.98 / 0.98x on one; AMD Zen 5, AVX2, 128
// images, alternating in one process, 20 ms of warm calls before each timed one).
template <class K>
constexpr int64_t aliased_a_block_rows() {
  return std::lcm<int64_t>(K::MR, 64 / sizeof(float));
}

// Part `part` of `parts` of packing an A block of `rows` rows, k step t of them at src + t *
// step, into panels of `width` (kc steps each, zeros past `rows`) at dst: a share of the k
// steps, panel by panel, after prefetching the next share's rows (into L2). Run between a
// block's tiles for the block after it (gemm_serial, packs_ahead): in place, each k step of a
// tile took a line from L3 or memory, all of them in one L1 set; packed a tile ahead, they
// come from L2. fc6 / fc7 forward (128 images) 1.04 / 1.04x as fast as packed by each tile
// row's first tile, which reads them in place (AMD Zen 5, AVX2, one thread, thread CPU time,
// alternating in one process; two threads 1.04-1.05x, in both orders). Each step of a panel is
// copied as 16 + 8 bytes: 32-byte copies spilling into the next step's slots, as pack_rows_avx2
// writes a whole block, ran the forward 0.86x as fast here (one thread).
template <int width>
void pack_part_ahead(const float* src, int64_t step, int64_t rows, int64_t kc, float* dst,
                     int64_t part, int64_t parts) {
  if (part + 1 < parts) prefetch_runs(src, step, kc, rows, part + 1, parts);
  const int64_t t0 = kc * part / parts, t1 = kc * (part + 1) / parts;
  for (int64_t r = 0; r < rows; r += width, dst += kc * width) {
    const int valid = int(std::min<int64_t>(width, rows - r));
    for (int64_t t = t0; t < t1; ++t) {
      const float* s = src + t * step + r;
      float* d = dst + t * width;
      if (valid == width) {
        int i = 0;  // 16-byte copies, then the rest: GCC copied 6 floats as three 8-byte moves
        for (; i + 4 <= width; i += 4) std::memcpy(d + i, s + i, 4 * sizeof(float));
        std::memcpy(d + i, s + i, (width % 4) * sizeof(float));
      } else {
        for (int i = 0; i < width; ++i) d[i] = i < valid ? s[i] : 0.f;
      }
    }
  }
}

// The rows of an A block packed while the next block's source is prefetched (gemm_serial's
// rows_ahead): the B block (cols x KC), the A block and its successor's source in three quarters
// of L2, within the kernel's MC and at least MR: 14x32 126 rows on a 1 MB L2, its 252 on 2 MB;
// 6x16 318 on 1 MB, 126 on 512 KB.
inline int64_t rows_ahead_block(const Blocking& blk, int64_t mr, int64_t cols) {
  const int64_t room = cache_sizes().l2 * 3 / 4 - cols * blk.kc * int64_t(sizeof(float));
  const int64_t rows = room / (2 * blk.kc * int64_t(sizeof(float))) / mr * mr;
  return std::clamp<int64_t>(rows, mr, blk.mc);
}

// The epilogue on rows [row0, row0 + rows) x cols of C at c, once they hold their final sums
// (while the micro-kernel's tile is still in L1).
inline void finish_tile(const Epilogue& epi, float* c, int64_t ldc, int64_t row0, int64_t rows,
                        int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* cr = c + r * ldc;
    for (int64_t j = 0; j < cols; ++j) cr[j] = epi.apply(cr[j], row0 + r);
  }
}

// The most floats of A a thread keeps packed across column blocks (64 MB; a team of T threads
// shares T times that). At 32 MB a 4096^2 SGEMM's packed A (17 x 8 blocks of 252 x 512, 17.5 M
// floats) outgrew two threads' share, and each thread packed A again for every column chunk it
// took: at 64 MB it is packed once, 1.03-1.04x as fast against 1.01x OpenBLAS (Zen 5, two
// threads, AVX-512, bench_gemm.py, builds alternated, two pairs).
constexpr size_t kKeptAFloats = size_t(1) << 24;

template <class K, class = void>
struct aligns_c_panels : std::false_type {};
template <class K>
struct aligns_c_panels<K, std::void_t<decltype(K::kAlignCPanels)>>
    : std::integral_constant<bool, K::kAlignCPanels> {};

// Kernels with kAlignCPanels lay their column blocks and B panels from `skew` columns before n0,
// so that every panel but the first starts its C rows on a cache line: the first panel is
// narrower by skew. numpy's arrays start 16 bytes into a line, so that each row of a tile spans
// NR / 16 + 1 lines rather than NR / 16; with the 14x32 tile the epilogue then waited on C (Zen
// 5, one thread, thread CPU time: 2048^2 / 4096^2 run on C at a line boundary 1.06-1.09x as fast
// per FLOP as at numpy's offset). None when the rows lie at different offsets into their lines
// (ldc not a multiple of a line), or when the columns are too few for one more (narrow) panel's
// work to be small beside it (kAlignCMinPanels).
constexpr int64_t kAlignCMinPanels = 32;
template <class K>
int64_t c_panel_skew(const float* c, int64_t ldc, int64_t n0, int64_t n1) {
  constexpr int64_t line = 64 / sizeof(float);
  if (!aligns_c_panels<K>::value || K::NR % line || ldc % line ||
      n1 - n0 < kAlignCMinPanels * K::NR)
    return 0;
  return int64_t(reinterpret_cast<uintptr_t>(c + n0) % 64 / sizeof(float));
}

// A packed once for a team of threads: its MC x KC blocks for rows [0, m) and k [0, k), block
// u = kb * mblocks + mb at blocks + u * block (laid out as GemmOperand::pack writes it), and per
// block a flag raised once it is packed.
struct TeamA {
  float* blocks;
  std::atomic<bool>* ready;
  int64_t mblocks, kblocks;
  size_t block;
  int64_t units() const { return mblocks * kblocks; }
  // Block (kb, mb), once whichever thread took it has packed it.
  const float* wait_for(int64_t kb, int64_t mb) const {
    const int64_t u = kb * mblocks + mb;
    while (!ready[u].load(std::memory_order_acquire)) std::this_thread::yield();
    return blocks + size_t(u) * block;
  }
};

// Columns [n0, n1) in blocks of NC, or, with `shared_n`, in blocks of `chunk` columns taken from
// that counter (starting at n0) until it passes n1. With `team_a` (whole m and k only) A comes
// packed from there. Runs the epilogue on each tile after the last k block when [k0, k1) is the
// whole reduction.
template <class K>
void gemm_serial(const GemmProblem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                 int64_t k0, int64_t k1, float* c, int64_t ldc, float beta,
                 std::atomic<int64_t>* shared_n = nullptr, int64_t chunk = 0,
                 const TeamA* team_a = nullptr) {
  int64_t a_step = K::MR;  // floats from one k step of an A panel to the next
  int64_t a_row = 0;       // A in place with k contiguous (run_rows_a): floats from row to row
  int64_t ahead_step = 0;  // packs_ahead: the k step of A's rows in memory
  int64_t src_step = 0;    // tile_packs_a: the k step of A's rows, read in place
  const int64_t panels = (n1 - n0 + K::NR - 1) / K::NR;
  const bool few_panels = panels <= kInPlaceMaxPanels;
  bool in_place = has_run_strided_a<K>::value && !team_a && few_panels &&
                 p.a->rows_in_place(m0, k0, &a_step);
  if constexpr (has_run_strided_a_packing<K>::value) {
    // L1 sets are indexed within the 4 KB page (virtually indexed, physically tagged): k steps a
    // multiple of 4 KB apart put all of a tile's A lines into one set. There A is packed: under
    // more than half of kInPlaceMaxPanels B panels, each block during the tiles of the block
    // before it (pack_part_ahead), into one of two buffers; under fewer, whose tiles would hide
    // less of that pack, by the first tile of each tile row, which reads A in place and writes
    // the row's panel for its other tiles. fc6 forward by packing ahead against the first tiles
    // (AMD Zen 5, AVX2, two threads, alternating in one process, 20 ms of warm calls before each
    // timed one): 1, 2, 3, 4 panels (16 to 64 images) 0.65, 0.81, 0.92, 0.99x as fast; 5 panels
    // (80 images) 1.02x, 8 (128) 1.07x.
    if (in_place && a_step * int64_t(sizeof(float)) % 4096 == 0) {
      (panels > kInPlaceMaxPanels / 2 ? ahead_step : src_step) = a_step;
      in_place = false, a_step = K::MR;
    }
  }
  const bool packs_ahead = ahead_step != 0, tile_packs_a = src_step != 0;
  if (has_run_rows_a<K>::value && !in_place && !team_a && gemm_reads_rows_a_in_place(p, K::NR))
    in_place = bool(p.a->rows_k_contiguous(m0, k0, &a_row));
  const Blocking blk = a_row ? rows_a_blocking<K>(p) : blocking_for<K>(p);
  // kPanels: a block's B panels, one more than NC's for the last columns taken with it (below).
  const int64_t KC = blk.kc, NC = blk.nc, kPanels = (NC + K::NR - 1) / K::NR + 1;
  if (!chunk) chunk = NC;
  thread_local AlignedScratch abuf(true), bbuf(true);  // packed blocks: huge pages
  thread_local std::vector<const float*> bptrs;  // per panel: KC row pointers, if gathered
  thread_local std::vector<char> gathered;
  // A packed by transposing rows (k contiguous: the FC data gradient's w, rows 16 KB apart for
  // fc6/fc7, on kernels without run_rows_a) under few B panels, where the pack weighs most: the
  // next block's rows are prefetched into L2 during this block's tiles (when A outgrows L2), so
  // that its pack reads them from cache, where 14 rows a page or more apart from memory ran it at
  // 7 GB/s (24 from L2). The A block then shrinks so that it, the next one's source and the B
  // block share L2.
  int64_t src_row_stride = 0;
  const bool rows_ahead = few_panels && !in_place && !team_a &&
                          (m1 - m0) * (k1 - k0) * int64_t(sizeof(float)) > cache_sizes().l2 &&
                          p.a->rows_k_contiguous(m0, k0, &src_row_stride);
  // A read in place: blocks of one tile row, whose tiles run over the B panels in turn (below).
  const int64_t MC = rows_ahead                 ? rows_ahead_block(blk, K::MR, n1 - n0)
                     : in_place || tile_packs_a ? K::MR
                     : packs_ahead              ? aliased_a_block_rows<K>()
                                                : blk.mc;
  // A is packed once for all n blocks when there are several and it is not huge (the filters of
  // a convolution: packed once per call, not once per 1024 columns of images).
  int64_t mblocks = (m1 - m0 + MC - 1) / MC, kblocks = (k1 - k0 + KC - 1) / KC;
  // The A block of rows from ic and k steps from pc: its index among the kept blocks (and the
  // team's: with team_a, [m0, m1) and [k0, k1) are all of m and k, in the same blocks).
  auto a_block = [&](int64_t ic, int64_t pc) { return (pc - k0) / KC * mblocks + (ic - m0) / MC; };
  size_t ablock = size_t(MC) * KC;
  bool keep_a = !in_place && !packs_ahead && !tile_packs_a && !team_a &&
                (shared_n || n1 - n0 > NC) && size_t(mblocks * kblocks) * ablock <= kKeptAFloats;
  const size_t a_floats = keep_a ? size_t(mblocks * kblocks) * ablock
                          : packs_ahead ? 2 * ablock  // this block's, and the next one's
                                        : ablock;
  float* pa_all = team_a || in_place ? nullptr : abuf.get(a_floats);
  // packs_ahead: the buffer (0 or 1) that holds the current block, and the block the other one
  // holds when it was packed ahead.
  int a_buffer = 0;
  int64_t ahead_ic = -1, ahead_pc = -1;
  float* pb = bbuf.get(size_t(kPanels) * K::NR * KC);
  bptrs.resize(size_t(kPanels) * KC), gathered.resize(kPanels);
  // Their addresses once: each use of a thread_local from a shared library is a call to
  // __tls_get_addr, and the tile loop below used two per tile.
  const float** const rows_of = bptrs.data();
  char* const is_gathered = gathered.data();
  // Blocks laid from n0 - skew (c_panel_skew; the shared counter starts there too); the first
  // is cut at n0, `off` columns short, and its first panel with it. A block that would leave
  // less than a panel after it takes those columns too (one panel more than NC holds), rather
  // than their own block: at 4096^2, A too large to keep, the skew would otherwise repack all of
  // A for the last 4 columns.
  const int64_t skew = c_panel_skew<K>(c, ldc, n0, n1), width = shared_n ? chunk : NC;
  auto next = [&](int64_t jv) { return shared_n ? shared_n->fetch_add(chunk) : jv + NC; };
  bool first = true;
  for (int64_t jv = shared_n ? next(0) : n0 - skew; jv < n1; jv = next(jv), first = false) {
    if (jv > n0 && n1 - jv < K::NR) continue;  // the block before took these columns
    const int64_t jc = std::max(jv, n0), off = jc - jv;
    int64_t end = std::min(jv + width, n1);
    if (n1 - end < K::NR) end = n1;
    int64_t nc = end - jc;
    // Panel q: block columns [panel_begin(q), panel_begin(q + 1)) of the nc.
    auto panel_begin = [&](int64_t q) {
      return std::clamp<int64_t>(q * K::NR - off, 0, nc);
    };
    for (int64_t pc = k0; pc < k1; pc += KC) {
      int64_t kc = std::min<int64_t>(KC, k1 - pc);
      float beta_k = pc == k0 ? beta : 1.f;
      const bool finish = p.epi.any() && k0 == 0 && k1 == p.k && pc + kc == k1;
      // B: full panels gathered from row pointers when the operand has them, packed otherwise.
      int64_t npanels = (nc + off + K::NR - 1) / K::NR;
      bool any_gathered = false;
      for (int64_t q = 0; q < npanels; ++q) {
        int64_t col = panel_begin(q), cols = panel_begin(q + 1) - col;
        // Not where A is read in place: those kernels (run_strided_a, run_rows_a) do not gather.
        is_gathered[q] = !in_place && cols == K::NR &&
                      p.b->row_pointers(jc + col, pc, kc, K::NR, rows_of + q * KC);
        any_gathered |= bool(is_gathered[q]);
        if (!is_gathered[q]) p.b->pack(jc + col, cols, pc, kc, K::NR, pb + q * kc * K::NR);
      }
      // Kernels with run_gather pack these panels in their first full tile (below). Otherwise
      // k step by k step across the panels: for one filter tap, consecutive panels read
      // consecutive pixels, a stream the hardware prefetchers follow.
      bool fused = has_run_gather<K>::value && m1 - m0 >= K::MR;
      if (any_gathered && !fused)
        for (int64_t t = 0; t < kc; ++t)
          for (int64_t q = 0; q < npanels; ++q)
            if (is_gathered[q]) {
              const float* src = rows_of[q * KC + t];
              float* dst = pb + (q * kc + t) * K::NR;
              for (int i = 0; i < K::NR; ++i) dst[i] = src[i];
            }
      for (int64_t ic = m0; ic < m1; ic += MC) {
        int64_t mc = std::min<int64_t>(MC, m1 - ic);
        int64_t a_stride = kc * K::MR;  // floats from one A panel to the next
        const float* pa = p.a->panels(ic, pc, K::MR, &a_stride);
        const bool a_has_panels = pa != nullptr;  // laid out by the operand: nothing packed here
        const float* src = nullptr;  // tile_packs_a: the tile row in place
        if (!pa && tile_packs_a) {
          src = p.a->rows_in_place(ic, pc, &src_step);
          pa = pa_all;
        } else if (!pa && packs_ahead) {
          float* dst = pa_all + a_buffer * ablock;
          if (ic != ahead_ic || pc != ahead_pc) p.a->pack(ic, mc, pc, kc, K::MR, dst);
          ahead_ic = ahead_pc = -1;
          pa = dst;
        } else if (!pa && in_place) {
          pa = a_row ? p.a->rows_k_contiguous(ic, pc, &a_row) : p.a->rows_in_place(ic, pc, &a_step);
          a_stride = a_row ? K::MR * a_row : K::MR;
        } else if (!pa && team_a) {
          pa = team_a->wait_for((pc - k0) / KC, (ic - m0) / MC);
        } else if (!pa) {
          float* dst = pa_all;
          if (keep_a) {
            dst += size_t(a_block(ic, pc)) * ablock;
            if (first) p.a->pack(ic, mc, pc, kc, K::MR, dst);
          } else {
            p.a->pack(ic, mc, pc, kc, K::MR, dst);
          }
          pa = dst;
        }
        // A read in place, one tile row per block: the first panel's tile reads its A lines
        // from memory and leaves them in L2 for the other panels' tiles. It prefetches the next
        // tile row's A into L2, a k step per k step (a tile row, four to eight tiles, ahead of
        // its use), so that the next first tile finds its lines in L2 as well.
        // Only a whole tile row of as many k steps, so that the prefetches stay inside A. Where
        // a block of 252 rows ran its tiles panel by panel and the block after it was prefetched
        // a part per tile, the first panel's tiles took 1.45x the others' time (fc7 forward, one
        // thread, Zen 5); now 1.3x (BENCHMARKS.md, "The FC forward by tile rows").
        int64_t next_ic = ic + MC, next_pc = pc;
        if (next_ic >= m1) next_ic = m0, next_pc = pc + KC;
        const int64_t next_mc = std::min<int64_t>(MC, m1 - next_ic),
                      next_kc = std::min<int64_t>(KC, k1 - next_pc);
        const float* next_src =
            !(in_place || src) || next_pc >= k1 || next_mc != K::MR || next_kc != kc ? nullptr
            : a_row ? p.a->rows_k_contiguous(next_ic, next_pc, &a_row)
            : src   ? p.a->rows_in_place(next_ic, next_pc, &src_step)
                    : p.a->rows_in_place(next_ic, next_pc, &a_step);
        const float* next_rows = rows_ahead && (!keep_a || first) && next_pc < k1
                                     ? p.a->rows_k_contiguous(next_ic, next_pc, &src_row_stride)
                                     : nullptr;
        const int64_t parts = npanels * ((mc + K::MR - 1) / K::MR);
        int64_t part = 0;
        // packs_ahead: the next block's rows in memory, and where they are packed, a part per
        // tile (pack_part_ahead; its first part prefetched here).
        const float* ahead_src =
            packs_ahead && next_pc < k1 ? p.a->rows_in_place(next_ic, next_pc, &ahead_step)
                                        : nullptr;
        float* const ahead_dst = ahead_src ? pa_all + (a_buffer ^ 1) * ablock : nullptr;
        if (ahead_src) prefetch_runs(ahead_src, ahead_step, next_kc, next_mc, 0, parts);
        // The next A block, where it is packed already (by the team, or on an earlier column
        // block), is prefetched into L2 a share per tile, so that its first tiles do not wait on
        // it from L3 or memory: SGEMM 2048^2 / 3072^2 / 4096^2 1.014 / 1.009 / 1.008x as fast
        // (AVX2), 4096^2 1.017x (AVX-512; AMD Zen 5, two threads, alternating in one process).
        const float* next_packed = nullptr;
        if (next_pc < k1 && !in_place && !src && !packs_ahead && !a_has_panels) {
          const int64_t u = a_block(next_ic, next_pc);
          if (team_a && team_a->ready[u].load(std::memory_order_acquire))
            next_packed = team_a->blocks + size_t(u) * team_a->block;
          else if (keep_a && !first)
            next_packed = pa_all + size_t(u) * ablock;
        }
        const int64_t next_lines =
            (next_mc + K::MR - 1) / K::MR * K::MR * next_kc * int64_t(sizeof(float)) / 64;
        for (int64_t q = 0; q < npanels; ++q) {
          const int64_t jr = panel_begin(q);
          int cols = int(panel_begin(q + 1) - jr);
          const float* bp = pb + q * kc * K::NR;
          for (int64_t ir = 0; ir < mc; ir += K::MR) {
            int rows = int(std::min<int64_t>(K::MR, mc - ir));
            const float* ap = pa + (ir / K::MR) * a_stride;
            float* ct = c + (ic + ir) * ldc + (jc + jr);
            if constexpr (has_run_strided_a_packing<K>::value) {
              if (src && q == 0) {
                if (fused && is_gathered[q] && ic == m0) {  // the tile gathers B: pack A first
                  p.a->pack(ic, mc, pc, kc, K::MR, pa_all);
                } else {
                  K::run_strided_a_packing(kc, src, src_step, next_src, pa_all, bp, ct, ldc,
                                           p.alpha, beta_k, rows, cols);
                  if (finish) finish_tile(p.epi, ct, ldc, ic + ir, rows, cols);
                  ++part;
                  continue;
                }
              }
            }
            micro_tile<K>(fused && is_gathered[q] && ic == m0 && ir == 0, kc, ap, a_step, a_row,
                          q == 0 ? next_src : nullptr, bp, rows_of + q * KC,
                          pb + q * kc * K::NR, ct, ldc, p.alpha, beta_k, rows, cols);
            if (finish) finish_tile(p.epi, ct, ldc, ic + ir, rows, cols);
            if (next_rows) prefetch_runs(next_rows, src_row_stride, next_mc, next_kc, part, parts);
            if (ahead_src)
              pack_part_ahead<K::MR>(ahead_src, ahead_step, next_mc, next_kc, ahead_dst, part,
                                     parts);
            if (next_packed)
              for (int64_t l = next_lines * part / parts, e = next_lines * (part + 1) / parts;
                   l < e; ++l)
                __builtin_prefetch(reinterpret_cast<const char*>(next_packed) + l * 64, 0, 2);
            ++part;
          }
        }
        if (ahead_src) a_buffer ^= 1, ahead_ic = next_ic, ahead_pc = next_pc;
      }
    }
  }
}

// The narrowest block of columns, in B panels, that the threads take from a shared counter
// where they could split the rows instead (gemm_blocked, where n >= m).
constexpr int64_t kMinChunkPanels = 32;

// C = beta * C for k == 0 (alpha * A * B is empty).
inline void scale_c(const GemmProblem& p) {
  for (int64_t i = 0; i < p.m; ++i) {
    float* r = p.c + i * p.ldc;
    for (int64_t j = 0; j < p.n; ++j) r[j] = p.beta == 0.f ? 0.f : p.beta * r[j];
  }
}

template <class K>
void gemm_blocked(const GemmProblem& p) {
  if (p.m <= 0 || p.n <= 0) return;
  if (p.k <= 0) {
    scale_c(p);
    return finish_tile(p.epi, p.c, p.ldc, 0, p.m, p.n);
  }
  int threads = omp_get_max_threads();
  double flops = 2.0 * double(p.m) * double(p.n) * double(p.k);
  if (flops < 4e6) threads = 1;  // waking a second core costs more than it saves
  // Called from a team's thread (local.cpp runs one GEMM per position on each thread): a nested
  // team would have one thread, so this thread does the whole problem itself.
  if (omp_in_parallel()) threads = 1;
  if (threads == 1) return gemm_serial<K>(p, 0, p.m, 0, p.n, 0, p.k, p.c, p.ldc, p.beta);

  const Blocking blk = blocking_for<K>(p);
  bool split_k = p.k >= 8 * std::max(p.m, p.n) && p.k >= int64_t(threads) * blk.kc;
  if (split_k) {
    // Each thread reduces a fixed contiguous share of k, thread 0 into C and the others into
    // private (m, n) buffers, added to C in thread order once all are done. Fixed shares, not
    // k blocks from a shared counter as for the columns below: which sums group together must
    // not depend on timing, or the same inputs would give different bits from run to run.
    // Grow-only, one per issuing thread (each logical CPU device issues from its own); the
    // team reads it through `partials`, since a thread_local names another object on each
    // OpenMP thread.
    thread_local std::vector<float> partial;
    size_t mn = size_t(p.m) * size_t(p.n);
    if (partial.size() < mn * (threads - 1)) partial.resize(mn * (threads - 1));
    float* partials = partial.data();
    int64_t kchunk = (p.k + threads - 1) / threads;
#pragma omp parallel num_threads(threads)
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      float* dst = t == 0 ? p.c : partials + mn * (t - 1);
      int64_t kb = std::min(p.k, t * kchunk), ke = std::min(p.k, kb + kchunk);
      if (kb < ke)
        gemm_serial<K>(p, 0, p.m, 0, p.n, kb, ke, dst, t == 0 ? p.ldc : p.n, t == 0 ? p.beta : 0.f);
      else if (t == 0)
        scale_c(p);
      else
        std::fill_n(dst, mn, 0.f);
#pragma omp barrier
#pragma omp for schedule(static)
      for (int64_t i = 0; i < p.m; ++i) {
        float* cr = p.c + i * p.ldc;
        for (int u = 0; u < nt - 1; ++u) {
          const float* src = partials + mn * u + i * p.n;
          for (int64_t j = 0; j < p.n; ++j) cr[j] += src[j];
        }
        if (p.epi.any()) finish_tile(p.epi, cr, p.ldc, i, 1, p.n);
      }
    }
    return;
  }

  // Where n >= m, blocks of NC columns, or fewer columns when that leaves each thread fewer than
  // two blocks; whole panels either way. Each block reads every A block from L3 again (once per
  // k block): where the blocks would be narrower than kMinChunkPanels panels and each thread's
  // share of the rows fills an A block, the threads split the rows instead (below), each packing
  // its own A and using it while it is in L2. Square SGEMM, two threads, against the column
  // blocks: 512^2 1.04-1.05x (AVX2) and 1.06-1.11x (AVX-512), 1024^2 1.00-1.04x, 2048^2 and
  // 3072^2 0.98-1.03x (at both ISAs; AMD Zen 5, process by process, 2-3 pairs). Fixed halves
  // there, where the counter would have handed out two blocks per thread, on calls of at most
  // about 0.1 s (3072^2 at AVX-512; AVX2's blocks are 32 panels wide from 2048^2 on).
  const int64_t panels = (p.n + K::NR - 1) / K::NR;
  const int64_t chunk_panels = (panels + 2 * threads - 1) / (2 * threads);
  if (p.n >= p.m && !(chunk_panels < kMinChunkPanels && p.m >= threads * blk.mc)) {
    const int64_t chunk = std::min<int64_t>(blk.nc, chunk_panels * K::NR);
    if (panels < threads) threads = int(panels);
    std::atomic<int64_t> next_col{-c_panel_skew<K>(p.c, p.ldc, 0, p.n)};
    // A packed once for the team, unless it comes in panels already or outgrows what the
    // threads would keep packed between them. The buffers are the issuing thread's (grow-only);
    // the team reads them through `team`. Which thread packs a block changes no bits.
    thread_local AlignedScratch team_blocks(true);
    thread_local std::unique_ptr<std::atomic<bool>[]> team_ready;
    thread_local int64_t team_ready_size = 0;
    TeamA team{nullptr, nullptr, (p.m + blk.mc - 1) / blk.mc, (p.k + blk.kc - 1) / blk.kc,
               size_t(blk.mc) * size_t(blk.kc)};
    int64_t a_stride;
    const bool share_a = !p.a->panels(0, 0, K::MR, &a_stride) &&
                         size_t(team.units()) * team.block <= kKeptAFloats * size_t(threads);
    if (share_a) {
      team.blocks = team_blocks.get(size_t(team.units()) * team.block);
      if (team_ready_size < team.units())
        team_ready.reset(new std::atomic<bool>[team.units()]), team_ready_size = team.units();
      team.ready = team_ready.get();
      for (int64_t u = 0; u < team.units(); ++u) team.ready[u].store(false);
    }
    std::atomic<int64_t> next_a{0};
    const int64_t a_units = share_a ? team.units() : 0;
#pragma omp parallel num_threads(threads)
    {
      for (int64_t u; (u = next_a.fetch_add(1)) < a_units;) {
        const int64_t ic = (u % team.mblocks) * blk.mc, pc = (u / team.mblocks) * blk.kc;
        p.a->pack(ic, std::min(blk.mc, p.m - ic), pc, std::min(blk.kc, p.k - pc), K::MR,
                  team.blocks + size_t(u) * team.block);
        team.ready[u].store(true, std::memory_order_release);
      }
      gemm_serial<K>(p, 0, p.m, 0, p.n, 0, p.k, p.c, p.ldc, p.beta, &next_col, chunk,
                     share_a ? &team : nullptr);
    }
    return;
  }
  int64_t units = (p.m + K::MR - 1) / K::MR;
  if (units < threads) threads = int(units);
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t per = (units + nt - 1) / nt;
    int64_t b = std::min(p.m, t * per * K::MR), e = std::min(p.m, (t + 1) * per * K::MR);
    if (b < e) gemm_serial<K>(p, b, e, 0, p.n, 0, p.k, p.c, p.ldc, p.beta);
  }
}

}  // namespace gemm_detail
}  // namespace convnet
