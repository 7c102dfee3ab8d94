// An output position's window on the image (conv_window), and the software prefetch of the image
// columns the direct convolution forward (conv_fwd_direct_kernels.h) reads at its next output
// position, x in (C, H, W, N).
//
// Consecutive output positions of a row share most of their windows: at stride s the next
// position adds s columns of fs (conv1: 4 of 11), whose fs rows per channel lie a row of the
// image apart (W * N floats): short runs, read a tile column of images at a time, which the
// hardware prefetchers do not follow, so the tiles of each position waited on them from L3 or
// memory, the same wait whatever the filters: per filter, 48 filters (8 blocks of 6) paid it
// twice as heavily as 96. Fetched during the previous position's tiles, a share of the runs per
// tile, they arrive in time; the forward does so where that pays (image_rows_outgrow_l2). The
// weight gradient's tiles walk one position's taps: there the same prefetch ran 3% slower (AMD
// Zen 5, one thread), and the next tile's rows are prefetched instead (conv_wgrad_kernels.h).
#pragma once
#include <algorithm>
#include <cstdint>

#include "cache_info.h"

namespace convnet {
namespace {

// Output position `pos`'s window on an H x W image: its corner (iy0, ix0), negative inside the
// padding, and the filter rows [ky0, ky1) and columns [kx0, kx1) that fall inside the image.
struct ConvWindow {
  int64_t iy0, ix0, ky0, ky1, kx0, kx1;
  bool row_start;  // the first position of its output row
};

inline ConvWindow conv_window(int64_t pos, int64_t out_w, int64_t stride, int64_t padding,
                              int64_t fs, int64_t H, int64_t W) {
  ConvWindow w;
  const int64_t oy = pos / out_w, ox = pos % out_w;
  w.iy0 = oy * stride - padding, w.ix0 = ox * stride - padding;
  w.ky0 = std::max<int64_t>(0, -w.iy0), w.ky1 = std::min(fs, H - w.iy0);
  w.kx0 = std::max<int64_t>(0, -w.ix0), w.kx1 = std::min(fs, W - w.ix0);
  w.row_start = ox == 0;
  return w;
}

// Whether the direct kernels prefetch the image ahead: where a position adds several columns
// (stride > 1) and the image rows one output row reads (fs per channel, `row` floats each)
// outgrow L2, so that those the next output row shares are gone by then and the new columns come
// from further out (AlexNet's conv1: 4 of 11 columns, 3.8 MB of rows). Elsewhere the prefetches
// only cost (AMD Zen 5, one thread: CIFAR's conv1, stride 1 and 240 KB of rows, 1-3% slower in
// the forward and 2-6% in the weight gradient, the towers' conv2 and conv5 weight gradients 3%).
inline bool image_rows_outgrow_l2(int64_t stride, int64_t channels, int64_t fs, int64_t row) {
  return stride > 1 &&
         double(channels) * double(fs) * double(row) * sizeof(float) > double(cache_sizes().l2);
}

// The columns a position adds to the previous position's window (its whole window when it
// starts an output row): one run of whole columns per window row (c, ky), the rows a row of the
// image apart within a channel and a plane apart across channels.
class NewColumns {
 public:
  NewColumns() = default;  // nothing to fetch (past the last position)
  // x: the image at its first channel and image; `win`: the position's window; `shares`: the
  // calls of prefetch_share() the runs are spread over.
  NewColumns(const float* x, int64_t channels, int64_t H, int64_t W, int64_t N, int64_t fs,
             int64_t stride, const ConvWindow& win, int64_t shares) {
    const int64_t end = win.ix0 + win.kx1;
    int64_t begin = win.ix0 + win.kx0;
    if (!win.row_start) begin = std::max(begin, std::min(win.ix0 - stride + fs, W));
    if (shares <= 0 || win.ky1 <= win.ky0 || end <= begin) return;
    run_ = reinterpret_cast<const char*>(x + ((win.iy0 + win.ky0) * W + begin) * N);
    kh_ = win.ky1 - win.ky0, left_ = channels * kh_, per_share_ = (left_ + shares - 1) / shares;
    bytes_ = (end - begin) * N * int64_t(sizeof(float));
    row_bytes_ = W * N * int64_t(sizeof(float)), next_plane_ = (H - kh_ + 1) * row_bytes_;
  }

  // The share's runs. Counters, not divisions: a share is a few runs, and at stride 1 (a column a
  // position) the tiles are short. Always inlined: GCC counts a prefetch as no side effect, and
  // dropped the calls of an out-of-line version that did nothing else.
  inline __attribute__((always_inline)) void prefetch_share() {
    for (int64_t i = 0; i < per_share_ && left_ > 0; ++i, --left_) {
      for (int64_t off = 0; off < bytes_; off += 64) __builtin_prefetch(run_ + off, 0, 2);
      if (++ky_ < kh_) {
        run_ += row_bytes_;
      } else {
        ky_ = 0, run_ += next_plane_;
      }
    }
  }

 private:
  const char* run_ = nullptr;
  int64_t left_ = 0, per_share_ = 0, kh_ = 1, ky_ = 0, bytes_ = 0, row_bytes_ = 0, next_plane_ = 0;
};

}  // namespace
}  // namespace convnet
