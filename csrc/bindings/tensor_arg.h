// TensorArg: what a binding sees of a convnet.Tensor (or, on the CPU backend, of a numpy array):
// a raw pointer, a shape, a dtype and a device. Kernels never see Python objects; launchers get
// raw pointers plus a params struct, after the binding has checked every shape with these helpers.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "check.h"

namespace convnet {

enum class DevKind : int { cpu = 0, cuda = 1, emu = 2 };

#if defined(CONVNET_BACKEND_CPU)
constexpr DevKind kThisBackend = DevKind::cpu;
#elif defined(CONVNET_BACKEND_EMU)
constexpr DevKind kThisBackend = DevKind::emu;
#else
constexpr DevKind kThisBackend = DevKind::cuda;
#endif

const char* devkind_name(DevKind k);

struct TensorArg {
  void* data = nullptr;
  std::vector<int64_t> shape;
  char dtype = 'f';  // numpy type chars: 'f' float32, 'i' int32, 'B' uint8
  DevKind kind = DevKind::cpu;
  int index = 0;
  bool writable = true;
  std::string problem;  // why a numpy array cannot be used as-is (reported by check_device)

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  int ndim() const { return int(shape.size()); }
  int64_t dim(int i) const { return shape.at(size_t(i < 0 ? i + ndim() : i)); }
  std::string device_str() const;
  template <class T>
  T* ptr() const { return static_cast<T*>(data); }
};

// A named argument of an op, for messages: "conv_fwd: x has shape (3, 7, 9, 2), expected ...".
struct Arg {
  const char* name;
  const TensorArg& t;
};

// All tensors on this backend and on one device; makes that device current (CUDA / emulated)
// and returns its index.
int check_device(const char* op, std::initializer_list<Arg> args);
void check_dtype(const char* op, const Arg& a, char dtype);
void check_ndim(const char* op, const Arg& a, int ndim);
// -1 in `expected` matches any size.
void check_shape(const char* op, const Arg& a, const std::vector<int64_t>& expected);
void check_writable(const char* op, const Arg& a);

}  // namespace convnet

namespace pybind11 {
namespace detail {
template <>
struct type_caster<convnet::TensorArg> {
  PYBIND11_TYPE_CASTER(convnet::TensorArg, const_name("Tensor"));
  bool load(handle src, bool convert);
};
}  // namespace detail
}  // namespace pybind11
