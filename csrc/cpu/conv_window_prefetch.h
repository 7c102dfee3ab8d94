// Software prefetch of the image columns the direct convolution forward
// (conv_fwd_direct_kernels.h) reads at its next output position, x in (C, H, W, N).
//
// Consecutive output positions of a row share most of their windows: at stride s the next
// position adds s columns of fs (conv1: 4 of 11), whose fs rows per channel lie a row of the
// image apart (W * N floats): short runs, read a tile column of images at a time, which the
// hardware prefetchers do not follow, so the tiles of each position waited on them from L3 or
// memory, the same wait whatever the filters: per filter, 48 filters (8 blocks of 6) paid it
// twice as heavily as 96. Fetched during the previous position's tiles, a share of the runs per
// tile, they arrive in time; the forward does so where that pays (its fetch_ahead). The weight
// gradient's tiles walk one position's taps: there the same prefetch ran 3% slower, and the next
// tile's rows are prefetched instead (conv_wgrad_kernels.h).
#pragma once
#include <algorithm>
#include <cstdint>

namespace convnet {
namespace {

// The columns output position `pos` adds to position pos - 1's window (its whole window when it
// starts an output row): one run of whole columns per window row (c, ky), the rows a row of the
// image apart within a channel and a plane apart across channels.
class NewColumns {
 public:
  // None past the last position. x: the image at its first channel and image; `shares`: the
  // calls of prefetch_share() the runs are spread over.
  NewColumns(const float* x, int64_t channels, int64_t H, int64_t W, int64_t N, int64_t fs,
             int64_t stride, int64_t padding, int64_t out_h, int64_t out_w, int64_t pos,
             int64_t shares) {
    if (pos >= out_h * out_w || shares <= 0) return;
    const int64_t oy = pos / out_w, ox = pos % out_w;
    const int64_t iy0 = oy * stride - padding, ix0 = ox * stride - padding;
    const int64_t ky0 = std::max<int64_t>(0, -iy0), ky1 = std::min(fs, H - iy0);
    const int64_t end = std::min(ix0 + fs, W);
    int64_t begin = std::max<int64_t>(0, ix0);
    if (ox > 0) begin = std::max(begin, std::min(ix0 - stride + fs, W));  // past pos - 1's window
    if (ky1 <= ky0 || end <= begin) return;
    run_ = reinterpret_cast<const char*>(x + ((iy0 + ky0) * W + begin) * N);
    kh_ = ky1 - ky0, left_ = channels * kh_, per_share_ = (left_ + shares - 1) / shares;
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
