// Errors. Library code never exits or aborts: it throws, and the bindings turn
//   convnet::ArgError  -> ValueError    (the caller passed something wrong: shapes, sizes, devices)
//   convnet::TypeError -> TypeError     (wrong dtype or kind of object)
//   convnet::Error     -> RuntimeError  (the machine said no: CUDA errors, out of memory, ...)
// Messages carry file:line of the check, and whatever the caller streams in (shapes!).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstdint>
#include <cstring>

namespace convnet {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ArgError : Error {
  using Error::Error;
};
struct TypeError : Error {
  using Error::Error;
};

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << (s.size() == 1 ? ",)" : ")");
  return o.str();
}

namespace detail {
template <class E>
[[noreturn]] inline void fail(const char* file, int line, const std::string& msg) {
  // Paths from the source root (csrc/...), whatever directory the build ran in.
  const char* rel = std::strstr(file, "csrc/");
  std::ostringstream o;
  o << msg << " (" << (rel ? rel : file) << ":" << line << ")";
  throw E(o.str());
}
}  // namespace detail

}  // namespace convnet

// CONVNET_CHECK(cond, "conv_fwd: x " << shape_str(x.shape) << " needs " << c << " channels");
#define CONVNET_CHECK_AS(E, cond, msg)                                                     \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::ostringstream convnet_check_os_;                                                \
      convnet_check_os_ << msg;                                                            \
      ::convnet::detail::fail<E>(__FILE__, __LINE__, convnet_check_os_.str());    \
    }                                                                                      \
  } while (0)
#define CONVNET_CHECK(cond, msg) CONVNET_CHECK_AS(::convnet::ArgError, cond, msg)
#define CONVNET_CHECK_TYPE(cond, msg) CONVNET_CHECK_AS(::convnet::TypeError, cond, msg)
#define CONVNET_FAIL(msg) CONVNET_CHECK_AS(::convnet::Error, false, msg)
