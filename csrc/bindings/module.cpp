// The module entry point shared by every backend, the registry behind CONVNET_BINDINGS, the
// exception mapping and the TensorArg conversion.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <utility>
#include <vector>

#include "device.h"
#include "registry.h"
#include "tensor_arg.h"

namespace py = pybind11;

namespace convnet {

static std::vector<std::pair<const char*, BindFn>>& registry() {
  static std::vector<std::pair<const char*, BindFn>> r;
  return r;
}

int add_binding(const char* family, BindFn fn) {
  registry().emplace_back(family, fn);
  return int(registry().size());
}

const char* devkind_name(DevKind k) {
  switch (k) {
    case DevKind::cpu: return "cpu";
    case DevKind::cuda: return "cuda";
    case DevKind::emu: return "emu";
  }
  return "?";
}

std::string TensorArg::device_str() const {
  if (kind == DevKind::cpu) return "cpu";
  return std::string(devkind_name(kind)) + ":" + std::to_string(index);
}

int check_device(const char* op, std::initializer_list<Arg> args) {
  const TensorArg* first = nullptr;
  const char* first_name = "";
  for (const Arg& a : args) {
    if (!a.t.problem.empty()) {
      bool dtype = a.t.problem.find("dtype") != std::string::npos;
      if (dtype) CONVNET_CHECK_TYPE(false, op << ": " << a.name << ": " << a.t.problem);
      CONVNET_CHECK(false, op << ": " << a.name << ": " << a.t.problem);
    }
    CONVNET_CHECK(a.t.kind == kThisBackend, op << ": " << a.name << " is on " << a.t.device_str()
                                               << " but this is the " << devkind_name(kThisBackend)
                                               << " backend");
    if (!first) {
      first = &a.t;
      first_name = a.name;
    } else {
      CONVNET_CHECK(a.t.index == first->index,
                    op << ": tensors on different devices: " << first_name << " on "
                       << first->device_str() << ", " << a.name << " on " << a.t.device_str()
                       << " (copy explicitly with .to())");
    }
  }
  int dev = first ? first->index : 0;
#if !defined(CONVNET_BACKEND_CPU)
  set_device(dev);
#endif
  return dev;
}

static const char* dtype_name(char c) {
  switch (c) {
    case 'f': return "float32";
    case 'i': return "int32";
    case 'B': return "uint8";
    default: return "unsupported";
  }
}

void check_dtype(const char* op, const Arg& a, char dtype) {
  CONVNET_CHECK_TYPE(a.t.dtype == dtype, op << ": " << a.name << " must be " << dtype_name(dtype)
                                            << ", got " << dtype_name(a.t.dtype));
}

void check_ndim(const char* op, const Arg& a, int ndim) {
  CONVNET_CHECK(a.t.ndim() == ndim, op << ": " << a.name << " must have " << ndim
                                       << " dimensions, got shape " << shape_str(a.t.shape));
}

void check_shape(const char* op, const Arg& a, const std::vector<int64_t>& expected) {
  bool ok = a.t.shape.size() == expected.size();
  for (size_t i = 0; ok && i < expected.size(); ++i)
    ok = expected[i] < 0 || expected[i] == a.t.shape[i];
  if (!ok) {
    std::ostringstream e;
    e << "(";
    for (size_t i = 0; i < expected.size(); ++i)
      e << (i ? ", " : "") << (expected[i] < 0 ? std::string("*") : std::to_string(expected[i]));
    e << ")";
    CONVNET_CHECK(false, op << ": " << a.name << " has shape " << shape_str(a.t.shape)
                            << ", expected " << e.str());
  }
}

void check_writable(const char* op, const Arg& a) {
  CONVNET_CHECK(a.t.writable, op << ": output " << a.name << " is read-only");
}

}  // namespace convnet

namespace pybind11 {
namespace detail {

// Accepts a convnet.Tensor (its `_desc` tuple: ptr, shape, dtype char, device kind, device index)
// or, for host tensors, a numpy array that is C-contiguous, aligned and of a supported dtype.
bool type_caster<convnet::TensorArg>::load(handle src, bool) {
  using convnet::DevKind;
  constexpr int64_t kMaxTensorDim = (int64_t(1) << 31) - 1;
  if (py::isinstance<py::array>(src)) {
    // Problems are recorded, not thrown: check_device() reports them with the op and argument.
    auto arr = py::reinterpret_borrow<py::array>(src);
    int flags = py::detail::array_proxy(arr.ptr())->flags;
    value.shape.assign(arr.shape(), arr.shape() + arr.ndim());
    char c = arr.dtype().char_();
    if (c == 'l' && arr.dtype().itemsize() == 4) c = 'i';
    std::ostringstream bad;
    if (!(flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_))
      bad << "numpy array of shape " << convnet::shape_str(value.shape)
          << " is not C-contiguous (use np.ascontiguousarray)";
    else if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
      bad << "numpy array is not aligned";
    else if (c != 'f' && c != 'i' && c != 'B')
      bad << "numpy array has dtype " << std::string(py::str(arr.dtype()))
          << "; convnet ops take float32 (labels int32)";
    else
      for (auto dim : value.shape)
        if (dim > kMaxTensorDim) {
          // Kernels take each dimension as a 32-bit int (an empty array can have any).
          bad << "numpy array of shape " << convnet::shape_str(value.shape)
              << " has a dimension above " << kMaxTensorDim;
          break;
        }
    value.problem = bad.str();
    value.data = const_cast<void*>(arr.data());
    value.dtype = c;
    value.kind = DevKind::cpu;
    value.index = 0;
    value.writable = flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return true;
  }
  if (!py::hasattr(src, "_desc")) return false;
  auto d = src.attr("_desc").cast<py::tuple>();
  value.data = reinterpret_cast<void*>(d[0].cast<uintptr_t>());
  value.shape = d[1].cast<std::vector<int64_t>>();
  value.dtype = d[2].cast<std::string>()[0];
  value.kind = DevKind(d[3].cast<int>());
  value.index = d[4].cast<int>();
  value.writable = true;
  return true;
}

}  // namespace detail
}  // namespace pybind11

#if defined(CONVNET_BACKEND_CPU)
#define CONVNET_MODULE _cpu
#elif defined(CONVNET_BACKEND_EMU)
#define CONVNET_MODULE _emu
#else
#define CONVNET_MODULE _cuda
#endif

PYBIND11_MODULE(CONVNET_MODULE, m) {
  m.doc() = "convnet kernels (one backend)";
  m.attr("backend") = convnet::devkind_name(convnet::kThisBackend);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const convnet::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const convnet::ArgError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::bad_alloc& e) {
      PyErr_SetString(PyExc_MemoryError, "out of host memory");
    } catch (const std::runtime_error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
  for (auto& [family, fn] : convnet::registry()) fn(m);
}
