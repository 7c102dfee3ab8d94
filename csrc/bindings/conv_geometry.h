// Convolution geometry for the bindings of conv and local ops: the shapes checked (each message
// names the op and the tensor) and the output size worked out once (shape.h).
//   x: (C, H, W, N), w: (C/groups, fs, fs, F) -> y: (F, Ho, Wo, N)
#pragma once
#include <vector>

#include "check.h"
#include "conv.h"
#include "shape.h"
#include "tensor_arg.h"

namespace convnet {

// ConvParams holds 32-bit sizes.
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

// The geometry of a convolution from the image and filter shapes, checked; names the op.
//   x: (C, H, W, N), w: (C/groups, fs, fs, F)
inline ConvParams conv_params(const char* op, const char* xname, const std::vector<int64_t>& x,
                              const char* wname, const std::vector<int64_t>& w, int padding,
                              int stride, int groups, int variant) {
  for (size_t i = 0; i < 4; ++i)
    CONVNET_CHECK(x[i] <= kMaxDim && w[i] <= kMaxDim,
                  op << ": " << xname << " " << shape_str(x) << " or " << wname << " "
                     << shape_str(w) << " has a dimension above " << kMaxDim);
  CONVNET_CHECK(groups >= 1, op << ": groups must be >= 1, got " << groups);
  CONVNET_CHECK(stride >= 1, op << ": stride must be >= 1, got " << stride);
  CONVNET_CHECK(padding >= 0, op << ": padding must be >= 0, got " << padding);
  CONVNET_CHECK(x[0] % groups == 0, op << ": groups=" << groups << " does not divide the "
                                       << x[0] << " channels of " << xname << " "
                                       << shape_str(x));
  CONVNET_CHECK(w[3] % groups == 0, op << ": groups=" << groups << " does not divide the "
                                       << w[3] << " filters of " << wname << " "
                                       << shape_str(w));
  CONVNET_CHECK(w[1] == w[2], op << ": filters must be square, " << wname << " has shape "
                                 << shape_str(w) << " (C/groups, fs, fs, F)");
  CONVNET_CHECK(w[0] * groups == x[0],
                op << ": " << wname << " " << shape_str(w) << " expects " << w[0] << " x "
                   << groups << " (groups) channels but " << xname << " " << shape_str(x)
                   << " has " << x[0]);
  const int64_t pad2 = 2 * int64_t(padding);
  CONVNET_CHECK(w[1] >= 1 && w[1] <= x[1] + pad2 && w[1] <= x[2] + pad2,
                op << ": filter " << w[1] << "x" << w[1] << " does not fit the padded image "
                   << x[1] + pad2 << "x" << x[2] + pad2 << " (" << xname << " "
                   << shape_str(x) << ", padding " << padding << ")");
  CONVNET_CHECK(x[3] >= 1, op << ": " << xname << " " << shape_str(x) << " holds no images");
  ConvParams p;
  p.channels = int(x[0]), p.height = int(x[1]), p.width = int(x[2]), p.images = int(x[3]);
  p.filters = int(w[3]), p.filter_size = int(w[1]);
  p.padding = padding, p.stride = stride, p.groups = groups;
  const int64_t out_h = conv_out_size(p.height, p.filter_size, padding, stride);
  const int64_t out_w = conv_out_size(p.width, p.filter_size, padding, stride);
  CONVNET_CHECK(out_h <= kMaxDim && out_w <= kMaxDim,
                op << ": the output would be " << out_h << "x" << out_w << " (padding " << padding
                   << "), above " << kMaxDim);
  p.out_h = int(out_h), p.out_w = int(out_w);
  p.variant = variant;
  return p;
}

inline std::vector<int64_t> conv_out_shape(const ConvParams& p) {
  return {p.filters, p.out_h, p.out_w, p.images};
}

}  // namespace convnet
