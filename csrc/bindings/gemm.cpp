#include <pybind11/stl.h>

#include <optional>

#include "gemm.h"
#include "registry.h"
#include "tensor_arg.h"
#if defined(CONVNET_BACKEND_CPU)
#include "fma_peak.h"
#endif

CONVNET_BINDINGS(gemm) {
  using namespace convnet;
  // op(A) (m, k) and op(B) (k, n) are the top-left blocks of the stored 2-d arrays, whose row
  // lengths are the leading dimensions; m, n, k = None take the whole arrays.
  m.def("sgemm", [](TensorArg a, TensorArg b, TensorArg c, bool trans_a, bool trans_b,
                    float alpha, float beta, std::optional<int64_t> m_arg,
                    std::optional<int64_t> n_arg, std::optional<int64_t> k_arg, int variant) {
    const char* op = "sgemm";
    check_device(op, {{"a", a}, {"b", b}, {"c", c}});
    for (Arg x : {Arg{"a", a}, Arg{"b", b}, Arg{"c", c}}) {
      check_dtype(op, x, 'f');
      check_ndim(op, x, 2);
    }
    check_writable(op, {"c", c});
    int64_t am = trans_a ? a.dim(1) : a.dim(0), ak = trans_a ? a.dim(0) : a.dim(1);
    int64_t bk = trans_b ? b.dim(1) : b.dim(0), bn = trans_b ? b.dim(0) : b.dim(1);
    const std::pair<const char*, std::optional<int64_t>> sizes[] = {
        {"m", m_arg}, {"n", n_arg}, {"k", k_arg}};
    for (const auto& [name, v] : sizes)
      CONVNET_CHECK(!v || *v >= 1, op << ": " << name << " must be >= 1 (or None: the whole "
                                         "array), got " << *v);
    const bool whole = !k_arg;
    const int64_t m = m_arg.value_or(am), n = n_arg.value_or(bn), k = k_arg.value_or(ak);
    CONVNET_CHECK(!whole || ak == bk, op << ": op(a) is " << shape_str({am, ak}) << " but op(b) is "
                                         << shape_str({bk, bn}) << " (trans_a=" << trans_a
                                         << ", trans_b=" << trans_b << ")");
    CONVNET_CHECK(m <= am && k <= ak && k <= bk && n <= bn,
                  op << ": (m, n, k) = (" << m << ", " << n << ", " << k << ") does not fit a "
                     << shape_str(a.shape) << " and b " << shape_str(b.shape)
                     << " (trans_a=" << trans_a << ", trans_b=" << trans_b << ")");
    CONVNET_CHECK(m <= c.dim(0) && n <= c.dim(1),
                  op << ": c has shape " << shape_str(c.shape) << ", too small for the ("
                     << m << ", " << n << ") result");
    int count = OP(sgemm_variant_count)();
    CONVNET_CHECK(variant >= 0 && variant < count, op << ": variant " << variant
                      << " does not exist (this backend has 0.." << count - 1 << ")");
    GemmParams p;
    p.m = m, p.n = n, p.k = k;
    p.trans_a = trans_a, p.trans_b = trans_b;
    p.lda = a.dim(1), p.ldb = b.dim(1), p.ldc = c.dim(1);
    p.alpha = alpha, p.beta = beta, p.variant = variant;
    without_gil([&] { OP(sgemm)(p, a.ptr<float>(), b.ptr<float>(), c.ptr<float>()); });
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a"), py::arg("trans_b"),
     py::arg("alpha"), py::arg("beta"), py::arg("m"), py::arg("n"), py::arg("k"),
     py::arg("variant"));
  m.def("sgemm_variant_count", [] { return OP(sgemm_variant_count)(); });
#if defined(CONVNET_BACKEND_CPU)
  m.def("measure_fma_peak", [](const std::string& isa, int threads, int64_t iters, int repeats) {
    py::gil_scoped_release nogil;
    return measure_fma_peak(isa.c_str(), threads, iters, repeats);
  }, py::arg("isa"), py::arg("threads"), py::arg("iters") = 20000000, py::arg("repeats") = 5,
     "GFLOP/s of an FMA loop (isa 'avx512' or 'avx2') on `threads` threads, best of `repeats`");
#endif
}
