// assemble_batch and resize_bilinear: the data pipeline's batch assembly and resampling
// (csrc/common/augment.h). CPU backend only.
#if defined(CONVNET_BACKEND_CPU)
#include <array>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "augment.h"
#include "registry.h"
#include "tensor_arg.h"

namespace {

using namespace convnet;

// `obj` as a tensor argument; anything else is a TypeError naming the argument (pybind11's own
// failed cast would be a RuntimeError).
TensorArg tensor_of(const char* op, const std::string& name, const py::handle& obj) {
  py::detail::make_caster<TensorArg> caster;
  CONVNET_CHECK_TYPE(caster.load(obj, true),
                     op << ": " << name << " must be a tensor or numpy array, got "
                        << std::string(py::str(py::type::of(obj))));
  return py::detail::cast_op<TensorArg>(std::move(caster));
}

// images: a list of uint8 (H, W, 3) arrays, or one uint8 (M, H, W, 3) array. Returns the image
// pointers and sets H, W.
std::vector<const uint8_t*> image_pointers(const py::handle& images, int64_t& H, int64_t& W) {
  const char* op = "assemble_batch";
  std::vector<const uint8_t*> ptrs;
  if (py::isinstance<py::list>(images) || py::isinstance<py::tuple>(images)) {
    auto seq = py::reinterpret_borrow<py::sequence>(images);
    for (size_t k = 0; k < seq.size(); ++k) {
      const std::string name = "images[" + std::to_string(k) + "]";
      TensorArg t = tensor_of(op, name, seq[k]);
      check_device(op, {{name.c_str(), t}});
      check_dtype(op, {name.c_str(), t}, 'B');
      if (k == 0) {
        check_shape(op, {name.c_str(), t}, {-1, -1, 3});
        H = t.dim(0);
        W = t.dim(1);
      } else {
        check_shape(op, {name.c_str(), t}, {H, W, 3});
      }
      ptrs.push_back(t.ptr<uint8_t>());
    }
    return ptrs;
  }
  TensorArg t = tensor_of(op, "images", images);
  check_device(op, {{"images", t}});
  check_dtype(op, {"images", t}, 'B');
  check_shape(op, {"images", t}, {-1, -1, -1, 3});
  H = t.dim(1);
  W = t.dim(2);
  for (int64_t k = 0; k < t.dim(0); ++k) ptrs.push_back(t.ptr<uint8_t>() + k * H * W * 3);
  return ptrs;
}

}  // namespace

CONVNET_BINDINGS(augment) {
  m.def("assemble_batch", [](py::object images, TensorArg index, TensorArg offsets,
                             TensorArg flips, py::object shift_obj, TensorArg mean, TensorArg out,
                             int variant) {
    const char* op = "assemble_batch";
    int64_t H = 0, W = 0;
    std::vector<const uint8_t*> imgs = image_pointers(images, H, W);
    check_device(op, {{"index", index}, {"offsets", offsets}, {"flips", flips}, {"mean", mean},
                      {"out", out}});
    check_dtype(op, {"index", index}, 'i');
    check_dtype(op, {"offsets", offsets}, 'i');
    check_dtype(op, {"flips", flips}, 'B');
    check_dtype(op, {"mean", mean}, 'f');
    check_dtype(op, {"out", out}, 'f');
    check_writable(op, {"out", out});
    check_ndim(op, {"index", index}, 1);
    const int64_t n = index.dim(0);
    check_shape(op, {"offsets", offsets}, {n, 2});
    check_shape(op, {"flips", flips}, {n});
    check_shape(op, {"mean", mean}, {3, -1, -1});
    const int64_t crop = mean.dim(1);
    CONVNET_CHECK(mean.dim(2) == crop, op << ": mean has shape " << shape_str(mean.shape)
                                          << ", expected (3, crop, crop)");
    CONVNET_CHECK(crop <= H && crop <= W, op << ": crop " << crop << " (from mean "
                                             << shape_str(mean.shape) << ") does not fit images of "
                                             << H << "x" << W);
    check_shape(op, {"out", out}, {3, crop, crop, n});
    const float* shift = nullptr;
    if (!shift_obj.is_none()) {
      TensorArg s = tensor_of(op, "shift", shift_obj);
      check_device(op, {{"shift", s}});
      check_dtype(op, {"shift", s}, 'f');
      check_shape(op, {"shift", s}, {n, 3});
      shift = s.ptr<float>();
    }
    const int32_t* idx = index.ptr<int32_t>();
    const int32_t* off = offsets.ptr<int32_t>();
    std::vector<const uint8_t*> src(static_cast<size_t>(n));
    std::vector<int32_t> ys(static_cast<size_t>(n)), xs(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      CONVNET_CHECK(idx[j] >= 0 && idx[j] < int64_t(imgs.size()),
                    op << ": index[" << j << "] = " << idx[j] << " but there are " << imgs.size()
                       << " images");
      ys[j] = off[2 * j];
      xs[j] = off[2 * j + 1];
      CONVNET_CHECK(ys[j] >= 0 && ys[j] <= H - crop && xs[j] >= 0 && xs[j] <= W - crop,
                    op << ": offsets[" << j << "] = (" << ys[j] << ", " << xs[j] << ") puts the "
                       << crop << "x" << crop << " window outside the " << H << "x" << W
                       << " image");
      src[j] = imgs[idx[j]];
    }
    const AssembleParams p{H, W, crop, n};
    py::gil_scoped_release nogil;
    assemble_batch_cpu(src.data(), ys.data(), xs.data(), flips.ptr<uint8_t>(), shift,
                       mean.ptr<float>(), out.ptr<float>(), p, variant);
  }, py::arg("images"), py::arg("index"), py::arg("offsets"), py::arg("flips"), py::arg("shift"),
     py::arg("mean"), py::arg("out"), py::arg("variant") = 0,
     "Crop, mirror, subtract the mean, add the colour shift and transpose images into the "
     "(3, crop, crop, N) float32 batch `out` (see csrc/common/augment.h).");
  m.def("resize_bilinear", [](TensorArg src, TensorArg out, std::array<double, 4> box,
                              int variant) {
    const char* op = "resize_bilinear";
    check_device(op, {{"src", src}, {"out", out}});
    check_dtype(op, {"src", src}, 'B');
    check_dtype(op, {"out", out}, 'B');
    check_writable(op, {"out", out});
    check_shape(op, {"src", src}, {-1, -1, -1});
    check_shape(op, {"out", out}, {-1, -1, src.dim(2)});
    ResizeParams p{src.dim(0), src.dim(1), out.dim(0), out.dim(1), src.dim(2),
                   {box[0], box[1], box[2], box[3]}, variant};
    py::gil_scoped_release nogil;
    resize_bilinear_cpu(src.ptr<uint8_t>(), out.ptr<uint8_t>(), p);
  }, py::arg("src"), py::arg("out"), py::arg("box"), py::arg("variant") = 0,
     "Resample the box (x0, y0, x1, y1) of uint8 src (H, W, C) onto all of uint8 out "
     "(h, w, C) with Pillow's BILINEAR filter, rounding once (see csrc/common/augment.h).");
  m.def("resize_bilinear_variants", &resize_bilinear_variants,
        "Variants of resize_bilinear this CPU runs: 1..this number.");
  m.def("assemble_batch_variants", &assemble_batch_variants,
        "Variants of assemble_batch this CPU runs: 1..this number.");
}
#endif
